"""Test-session setup that must happen before any kernel module is imported.

Triton reads TRITON_INTERPRET when a @triton.jit function is defined, so the interpreter mode is
set here, at conftest import, before the tests import tritune's kernels. The tuning database and
compile cache go to a per-session temporary directory so tests never touch the user's files.
"""

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
# The interpreter runs every tl.dot as a small numpy matmul; OpenBLAS's thread pool makes those
# ~1000x slower on a shared 2-core machine (48 ms instead of 0.03 ms for 64x256x64). Must be set
# before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
_TMP = tempfile.mkdtemp(prefix="tritune-tests-")
os.environ.setdefault("TRITUNE_DB", os.path.join(_TMP, "tuned.db"))
os.environ.setdefault("TRITUNE_CACHE_DIR", os.path.join(_TMP, "cache"))

import pytest  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# The compacted copy in the repository, so CI needs no shared folder.
KERNEL_TUNER_CACHE = os.path.join(REPO, "data", "kernel_tuner_cache")


@pytest.fixture
def tmp_db(tmp_path):
    """Path of a fresh database file for one test."""
    return tmp_path / "tuned.db"


@pytest.fixture(scope="session")
def kernel_tuner_cache():
    """Directory of the Kernel Tuner landscapes (convolution_milo/, dedispersion_milo/)."""
    return KERNEL_TUNER_CACHE
