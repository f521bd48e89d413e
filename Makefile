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

test/test_main: test/test_main.c test/test_gpu.c w8a8.c w8a8.h kernels.cu.inc tools/json.h
	$(CC) $(CFLAGS) test/test_main.c -o $@ $(LDLIBS)

test: all test/test_main
	./test/test_main

# optional: the NumPy/HF reference used by one test (it skips without them)
deps:
	python3 -m pip install --quiet numpy safetensors tokenizers || echo "make deps: pip failed; the HF-reference test will skip"

# warning-free under both compilers
warnings:
	$(CC) -std=gnu11 -Wall -Wextra -Werror -fsyntax-only w8a8.c tools/run.c tools/convert.c test/test_main.c
	clang -std=gnu11 -Wall -Wextra -Werror -fsyntax-only w8a8.c tools/run.c tools/convert.c test/test_main.c

clean:
	rm -f run convert w8a8.o test/test_main
	rm -rf test/out

.PHONY: all test clean deps warnings
