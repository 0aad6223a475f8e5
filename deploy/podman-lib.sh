# Shared by deploy/image-test.sh and deploy/deb-test.sh (sourced, not run): the podman tools
# installed when missing, and a Debian bookworm base image made from Debian's packages with
# mmdebstrap, without a registry. The sourcing script defines `step`, `fail`, `pm` (a bounded
# podman) and WORK (a scratch folder) first.

# podman (with runc) and mmdebstrap, installed with apt when one is missing (as root).
install_podman_tools() {
    step "podman, runc, mmdebstrap"
    local packages=(podman runc conmon netavark aardvark-dns iptables catatonit mmdebstrap uidmap slirp4netns fuse-overlayfs)
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        [ "$(id -u)" -eq 0 ] || fail "missing packages: ${missing[*]} (apt-get install them as root)"
        echo "installing: ${missing[*]}"
        timeout 300 apt-get update -q >"$WORK/apt.log" 2>&1 \
            || { cat "$WORK/apt.log"; fail "apt-get update"; }
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q "${missing[@]}" >>"$WORK/apt.log" 2>&1 \
            || { tail -30 "$WORK/apt.log"; fail "apt-get install ${missing[*]}"; }
    fi
}

# base_image NAME CMD [PACKAGES]: the image NAME, unless podman has it already: Debian bookworm
# minbase (with its updates and security sources, which mmdebstrap adds when no mirror is
# named), no docs or man pages, plus PACKAGES (comma-separated), with CMD as its command.
base_image() {
    local name=$1 cmd=$2 include=${3:-}
    if pm image exists "$name"; then
        echo "image $name: present"
        return
    fi
    step "image $name from Debian's packages (mmdebstrap${include:+: $include})"
    timeout 900 mmdebstrap --variant=minbase --quiet \
        ${include:+--include="$include"} \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm "$WORK/base.tar" >"$WORK/mmdebstrap.log" 2>&1 \
        || { tail -30 "$WORK/mmdebstrap.log"; fail "mmdebstrap"; }
    PM_TIMEOUT=600 pm import --change "CMD $cmd" "$WORK/base.tar" "$name" >/dev/null \
        || fail "podman import $name"
    rm -f "$WORK/base.tar"
}
