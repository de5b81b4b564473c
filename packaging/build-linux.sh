#!/usr/bin/env bash
# Build the Linux x86-64 onedir bundle: dist/emclassify/{emclassify,emclassify-gui,samples/,...}
#
# Needs emclassify installed in the Python that runs this (with its native extension built,
# e.g. by the README's test command) and PyInstaller (installed here if missing).
#   PYTHON=.venv/bin/python packaging/build-linux.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c "import PyInstaller" 2>/dev/null || "$PY" -m pip install -q "pyinstaller>=6.0"
"$PY" -c "import torch, emclassify._C" || { echo "build-linux.sh: emclassify._C is not built; install with 'pip install --no-build-isolation -e .' first" >&2; exit 1; }
"$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/emclassify.spec
out=dist/emclassify
rm -rf "$out/samples"
cp -r emclassify/data/samples "$out/samples"
mkdir -p "$out/share/applications" "$out/share/icons/hicolor/256x256/apps"
cp packaging/linux/emclassify.desktop "$out/share/applications/"
cp packaging/linux/emclassify.png "$out/share/icons/hicolor/256x256/apps/emclassify.png"
cp packaging/linux/install-desktop-entry.sh "$out/"
echo "bundle: $out ($(du -sh "$out" | cut -f1))"
