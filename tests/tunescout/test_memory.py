import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Page faults of fingerprinting the same 10 s clip again, in a fresh interpreter.
FAULTS = """
import resource, sys
import numpy as np
import dejavu
from tunescout.memory import keep_freed_memory
if sys.argv[1] == "pad":
    assert keep_freed_memory()
clip = np.random.default_rng(0).random(110250).astype(np.float32)
for _ in range(3):
    dejavu.fingerprint_query(clip, dejavu.DEFAULT_PARAMS)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    dejavu.fingerprint_query(clip, dejavu.DEFAULT_PARAMS)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_clip(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout)


def test_kept_memory_spares_the_page_faults_of_each_clip():
    # glibc by default hands the freed arrays back to the kernel and faults them in again next time.
    assert faults_per_clip("pad") < 0.1 * max(faults_per_clip("default"), 100)
