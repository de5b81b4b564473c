# Build the Windows x64 onedir bundle: dist\emclassify\{emclassify.exe,emclassify-gui.exe,samples\,...}
#
# Run from a "x64 Native Tools" prompt (MSVC on PATH) in the repository root:
#   powershell -ExecutionPolicy Bypass -File packaging\build-windows.ps1
# It makes .venv, installs the CPU torch and emclassify (compiling emclassify._C), then PyInstaller.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")
if (-not (Test-Path .venv)) { python -m venv .venv }
$py = ".venv\Scripts\python.exe"
& $py -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
& $py -m pip install -q setuptools wheel pybind11 ninja "pyinstaller>=6.0"
& $py -m pip install -q --no-build-isolation -e ".[gui]"
& $py -c "import torch, emclassify._C"
if ($LASTEXITCODE -ne 0) { throw "emclassify._C was not built (is MSVC on PATH?)" }
& $py -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build\pyinstaller packaging\emclassify.spec
if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }
$out = "dist\emclassify"
if (Test-Path "$out\samples") { Remove-Item -Recurse -Force "$out\samples" }
Copy-Item -Recurse emclassify\data\samples "$out\samples"
$size = (Get-ChildItem -Recurse $out | Measure-Object -Sum Length).Sum / 1MB
Write-Host ("bundle: {0} ({1:N0} MB)" -f $out, $size)
