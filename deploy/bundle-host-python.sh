#!/bin/bash
# bundle-host-python.sh DEST [PYTHON]: a relocatable copy of this image's Python for
# running the `sluice` CNI binary on the host (run at image build time).
#
# why: the runtime executes /opt/cni/bin/sluice on the *host*, outside any container,
# and its shebang names an interpreter there. Many nodes have no python3 (kind, Flatcar,
# Bottlerocket, Talos, COS), and the image's /usr/bin/python3 needs the image's glibc.
# So DEST gets the interpreter, the shared libraries it links (including the dynamic
# loader) and the standard library, plus bin/python3: a /bin/sh wrapper that runs the
# interpreter through the bundled loader with --library-path, so the host's libc never
# matters. The shim is standard-library only (cni/shim.py) and runs with -I, so no
# PYTHONHOME is needed: Python finds lib/python3.X relative to bin/python3.X.
set -euo pipefail

dest=${1:?usage: bundle-host-python.sh DEST [PYTHON]}
python=${2:-/usr/bin/python3}

real=$(readlink -f "$python")
name=$(basename "$real")                                   # python3.11
stdlib=$("$real" -I -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')

rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
cp "$real" "$dest/bin/$name"

# Shared libraries and the loader, as ldd reports them for this interpreter.
loader=""
while read -r first arrow target _; do
    if [ "$arrow" = "=>" ] && [ "${target:0:1}" = "/" ]; then
        cp -L "$target" "$dest/lib/"
    elif [ "${first:0:1}" = "/" ]; then
        loader=$first
    fi
done < <(ldd "$real")
[ -n "$loader" ] || { echo "bundle-host-python: no dynamic loader in ldd $real" >&2; exit 1; }
cp -L "$loader" "$dest/lib/ld-linux.so"

# The standard library, without what a CNI shim never imports.
cp -a "$stdlib" "$dest/lib/$name"
for skip in test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data distutils \
    site-packages dist-packages; do
    rm -rf "${dest:?}/lib/$name/$skip"
done
rm -rf "$dest/lib/$name"/config-*
# why: Debian's stdlib has symlinks into /etc and /usr (sitecustomize, sysconfigdata);
# on the host they would point at the host's files, so they go.
find "$dest" -type l -delete

cat >"$dest/bin/python3" <<WRAPPER
#!/bin/sh
# Interpreter of the sluice CNI binary: $name run by its own bundled loader and libc.
here=\$(cd "\${0%/*}" && pwd)
root=\${here%/bin}
exec "\$root/lib/ld-linux.so" --library-path "\$root/lib" "\$root/bin/$name" "\$@"
WRAPPER
chmod 0755 "$dest/bin/python3" "$dest/bin/$name" "$dest/lib/ld-linux.so"

# A content id: install-cni.sh installs each distinct bundle once, side by side.
(cd "$dest" && find . -type f ! -name VERSION -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-16) >"$dest/VERSION"
echo "bundled $name ($(du -sh "$dest" | cut -f1)) in $dest, id $(cat "$dest/VERSION")"
