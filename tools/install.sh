#!/usr/bin/env bash
# Installs what freqfusion_d2 needs into the current Python environment, skipping each step that
# is already satisfied, so running it again installs nothing:
#   1. torch + torchvision            TORCH_SPEC  (default: "torch==2.14.1 torchvision==0.29.2")
#   2. build tools                    setuptools<81 (detectron2's model_zoo), wheel, ninja, packaging
#   3. detectron2                     DETECTRON2_SRC (default: its GitHub repository at the pinned
#                                     commit; or a local source tree, a source archive, any pip
#                                     requirement)
#   4. this package, editable, with its compiled extension and the extras in FREQFUSION_EXTRAS
#      (default: "dev", the test and lint tools). The extension is rebuilt when a C++/CUDA source
#      is newer than it; FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST, CUDA_HOME, MAX_JOBS and NVCC_FLAGS
#      are passed to the build (see setup.py).
# PYTHON selects the interpreter (default: python). Used by `make demo`, `make test` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.2}"
DETECTRON2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
DETECTRON2_SRC="${DETECTRON2_SRC:-git+https://github.com/facebookresearch/detectron2.git@$DETECTRON2_COMMIT}"
FREQFUSION_EXTRAS="${FREQFUSION_EXTRAS:-dev}"

pip_install() {
  echo "+ pip install $*"
  "$PYTHON" -m pip install "$@"
}

# Runs a check in an isolated interpreter (-I: the current folder is not on sys.path, so the
# installed packages are what is checked, not this checkout's sources).
check() {
  (cd / && "$PYTHON" -I -c "$1" "${@:2}") 2>/dev/null
}

# 1. PyTorch. An installed torch is kept whatever its version: the extension is built against it.
if check "import torch, torchvision"; then
  echo "== torch $(check 'import torch; print(torch.__version__)') is installed"
else
  # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
  pip_install $TORCH_SPEC
fi

# 2. Build tools (the package and detectron2 are built without build isolation, against torch).
if ! check "
import ninja, packaging, setuptools, wheel
assert int(setuptools.__version__.split('.')[0]) < 81
"; then
  pip_install "setuptools<81" wheel ninja packaging
fi

# 3. detectron2 (not on PyPI). FORCE_CUDA is meant for this package's kernels: detectron2
# builds its own CUDA ops wherever a GPU is visible, and on a machine without one (a CI or build
# box) its CUDA build would need CUDA headers that torch's pip wheels do not all provide.
if check "import detectron2"; then
  echo "== detectron2 $(check 'import detectron2; print(detectron2.__version__)') is installed"
else
  (unset FORCE_CUDA && pip_install --no-build-isolation "$DETECTRON2_SRC")
fi

# 4. This package. Prints what is missing: "package" (not installed editable from this
# checkout, extension missing or older than its sources, CUDA kernels asked for but absent),
# else the requirements of the asked extras that are not met.
state=$(cd / && "$PYTHON" -I - "$PWD" "$FREQFUSION_EXTRAS" <<'PY'
import glob, importlib.metadata as md, json, os, sys
from packaging.requirements import Requirement

root, extras = os.path.realpath(sys.argv[1]), [e for e in sys.argv[2].split(",") if e]
try:
    dist = md.distribution("freqfusion_d2")
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    assert url.get("dir_info", {}).get("editable") and url["url"] == "file://" + root
    from freqfusion_d2 import _C
    sources = glob.glob(os.path.join(root, "freqfusion_d2", "layers", "csrc", "**", "*.*"), recursive=True)
    assert max(os.path.getmtime(s) for s in sources) <= os.path.getmtime(_C.__file__)
    assert os.environ.get("FORCE_CUDA") != "1" or _C.with_cuda()
except Exception:
    print("package")
    sys.exit()
unmet = []
for line in dist.requires or []:
    req = Requirement(line)
    if req.marker is None or not any(req.marker.evaluate({"extra": e}) for e in extras):
        continue
    try:
        ok = md.version(req.name) in req.specifier
    except md.PackageNotFoundError:
        ok = False
    if not ok:
        req.marker = None
        unmet.append(str(req))
print(" ".join(unmet))
PY
)
if [ "$state" = "package" ]; then
  pip_install --no-build-isolation -e ".${FREQFUSION_EXTRAS:+[$FREQFUSION_EXTRAS]}"
elif [ -n "$state" ]; then
  # shellcheck disable=SC2086  # a list of requirements
  pip_install $state
else
  echo "== freqfusion_d2 is installed from $PWD with its extension and [$FREQFUSION_EXTRAS]"
fi

check "
from freqfusion_d2 import _C
print('== freqfusion_d2._C: CUDA kernels', 'built' if _C.with_cuda() else 'not built')
" || { echo "freqfusion_d2._C does not import after the install" >&2; exit 1; }
