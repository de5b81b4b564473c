# Smoke-test the Windows bundle from outside the source tree (same checks as smoke-test.sh).
param([string]$Bundle = (Join-Path $PSScriptRoot "..\dist\emclassify"))
$ErrorActionPreference = "Stop"
$Bundle = (Resolve-Path $Bundle).Path
$work = New-Item -ItemType Directory -Path (Join-Path $env:TEMP ("emclassify-smoke-" + [guid]::NewGuid()))
Push-Location $work
try {
    $version = & "$Bundle\emclassify.exe" --version
    $version | Write-Host
    if (-not ($version -match "ops backend: native")) { throw "the native backend is not active in the bundle" }
    & "$Bundle\emclassify.exe" batch "$Bundle\samples" --out "$work\samples.csv"
    if ($LASTEXITCODE -ne 0) { throw "emclassify batch failed ($LASTEXITCODE)" }
    $rows = (Get-Content "$work\samples.csv").Count - 1
    if ($rows -ne 40) { throw "expected 40 rows in the CSV, got $rows" }
    $env:QT_QPA_PLATFORM = "offscreen"
    $p = Start-Process -FilePath "$Bundle\emclassify-gui.exe" -ArgumentList "--selftest", "--screenshot", "$work\selftest.png" -Wait -PassThru -NoNewWindow
    if ($p.ExitCode -ne 0) { throw "emclassify-gui --selftest failed ($($p.ExitCode))" }
    Write-Host "smoke test: OK ($Bundle)"
} finally { Pop-Location }
