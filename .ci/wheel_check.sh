#!/usr/bin/env bash
# A plain (non-editable) wheel install must find its shipped recipes and studies: build the
# wheel, install it into a fresh virtual environment, and run `volrot train` with the shipped
# default recipe from a folder outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_DIR=$(mktemp -d)
VENV="${VOLROT_CI_WHEEL_VENV:-.ci-wheel-venv}"
rm -rf "$VENV"
pip wheel --no-deps -q -w "$WHEEL_DIR" .
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q "$WHEEL_DIR"/volrot-*.whl
"$VENV/bin/pip" install -q --no-deps medmnist
RUN_DIR=$(mktemp -d)
(
  cd "$RUN_DIR"
  "$OLDPWD/$VENV/bin/python" - <<'PY'
import volrot, pathlib
assert "site-packages" in volrot.__file__, volrot.__file__  # the wheel, not the checkout
root = pathlib.Path(volrot.__file__).parent
assert (root / "recipes" / "resnet3d_shapes.yaml").is_file()
assert any((root / "studies").glob("*.yaml")), "shipped studies missing from the wheel"
PY
  OMP_NUM_THREADS=1 "$OLDPWD/$VENV/bin/volrot" train --epochs 1 --set data.max_samples=32 --name wheel -q
  grep -q "width: 4" runs/wheel/recipe.yaml  # the shipped default recipe, not the builtin defaults
  test -f runs/wheel/best.safetensors
)
echo "wheel check: volrot train ran from the installed wheel with the shipped recipe"
rm -rf "$RUN_DIR" "$WHEEL_DIR" "$VENV"
