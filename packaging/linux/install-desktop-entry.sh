#!/usr/bin/env bash
# Add emclassify to the desktop's application menu (for this user), pointing at this bundle.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps"
mkdir -p "$apps" "$icons"
cp "$here/share/icons/hicolor/256x256/apps/emclassify.png" "$icons/"
sed "s|^Exec=.*|Exec=\"$here/emclassify-gui\"|" "$here/share/applications/emclassify.desktop" > "$apps/emclassify.desktop"
echo "installed $apps/emclassify.desktop"
