#!/usr/bin/env python3
"""kernel_report.py: what ptxas makes of kernels.cu.inc, without a GPU.

    python3 tools/kernel_report.py [--file kernels.cu.inc] [--sm 90a] [--loops KERNEL [--min N]] [--cubin FILE]

Compiles the kernels file with nvcc (every kernel given its body, as NVRTC's parts together would) and prints
each kernel's registers, stack and spill bytes. --loops KERNEL also disassembles KERNEL (cuobjdump: on PATH, in
$CUOBJDUMP, or `pip install nvidia-cuda-cuobjdump`) and lists its loops (backward branches) with their length
and instruction mix: a static count over every path through the loop body, so compare variants by it, not
against a clock. Needs nvcc (CUDA toolkit) only; NVRTC's own compile is checked by `./test/test_main nvrtc`.
"""
import argparse, collections, glob, os, re, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kernel_names(path):   # every kernel whose body the file guards with W8A8_BODY_<name>
    return sorted(set(re.findall(r'W8A8_BODY_(\w+)', open(path).read())))


def compile_cubin(path, sm, out):
    sm_num = sm.rstrip('a')
    with tempfile.TemporaryDirectory() as t:
        cu = os.path.join(t, 'k.cu')
        with open(cu, 'w') as f:
            f.write('#define W8A8_KERNELS(...) __VA_ARGS__\n' + open(path).read())
        cmd = ['nvcc', f'-arch=sm_{sm}', '-cubin', '-std=c++17', '--fmad=false', f'-DW8A8_SM={sm_num}', '-DW8A8_BUILD=15',
               '-Xptxas', '-v', '-o', out, cu] + [f'-DW8A8_BODY_{n}=1' for n in kernel_names(path)]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit('nvcc failed:\n' + '\n'.join(l for l in r.stderr.splitlines() if 'error' in l)[:4000])
    rows, fn, stack = [], None, ''
    for line in r.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m: fn = m.group(1)
        m = re.search(r'(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads', line)
        if m: stack = m.groups()
        m = re.search(r'Used (\d+) registers', line)
        if m and fn: rows.append((fn, int(m.group(1))) + tuple(int(x) for x in stack)); fn = None
    return rows


def cuobjdump():
    for c in [os.environ.get('CUOBJDUMP'), shutil.which('cuobjdump')] + glob.glob(os.path.join(ROOT, 'dev/bin/cuobjdump')):
        if c and os.path.exists(c): return c
    try:   # pip install nvidia-cuda-cuobjdump
        import nvidia
        for d in nvidia.__path__:
            for c in glob.glob(os.path.join(d, '*', 'bin', 'cuobjdump')): return c
    except ImportError: pass
    sys.exit('no cuobjdump: put it on PATH, set $CUOBJDUMP, or pip install nvidia-cuda-cuobjdump')


def loops(cubin, fn, min_len):
    out = subprocess.run([cuobjdump(), '-sass', '-fun', fn, cubin], capture_output=True, text=True).stdout
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in re.finditer(r'/\*([0-9a-f]{4,})\*/\s+([^;]*);', out)]
    at = {a: i for i, (a, _) in enumerate(ins)}
    print(f'{fn}: {len(ins)} instructions, {sum("STL" in t for _, t in ins)} STL, {sum("LDL" in t for _, t in ins)} LDL')
    for i, (a, t) in enumerate(ins):
        m = re.search(r'BRA.*?0x([0-9a-f]+)', t)
        if not m or int(m.group(1), 16) > a or int(m.group(1), 16) not in at: continue
        body = [x for _, x in ins[at[int(m.group(1), 16)]:i + 1]]
        if len(body) < min_len: continue
        mix = collections.Counter(re.sub(r'^@!?U?P\w+\s+', '', x).split()[0].split('.')[0] for x in body)
        print(f'  loop {int(m.group(1), 16):#07x}..{a:#07x}: {len(body):5d}  ' + ', '.join(f'{k} {v}' for k, v in mix.most_common(12)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--file', default=os.path.join(ROOT, 'kernels.cu.inc'))
    ap.add_argument('--sm', default='90a', help='80, 86, 89 or 90a')
    ap.add_argument('--loops', metavar='KERNEL')
    ap.add_argument('--min', type=int, default=40, help='shortest loop body listed (instructions)')
    ap.add_argument('--cubin', metavar='FILE', help='keep the cubin (for cuobjdump -sass)')
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        cubin = os.path.join(t, 'k.cubin')
        rows = compile_cubin(a.file, a.sm, cubin)
        print(f'{"kernel":26s} {"regs":>5s} {"stack":>6s} {"spill st":>9s} {"spill ld":>9s}   (sm_{a.sm})')
        for r in sorted(rows): print(f'{r[0]:26s} {r[1]:5d} {r[2]:6d} {r[3]:9d} {r[4]:9d}')
        if a.loops: loops(cubin, a.loops, a.min)
        if a.cubin: shutil.copy(cubin, a.cubin)


if __name__ == '__main__':
    main()
