# Sourced by scripts/demo.sh and scripts/package.sh: the settings of every release build,
# so that both share one build and no file records where it was built (paths of the
# checkout and of cargo's registry are mapped to /koe5 and /cargo).
export CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1
koe5_cargo_home=${CARGO_HOME:-$HOME/.cargo}
case " ${RUSTFLAGS:-} " in
    *" --remap-path-prefix=$koe5_cargo_home=/cargo "*) ;;
    *) export RUSTFLAGS="--remap-path-prefix=$koe5_cargo_home=/cargo --remap-path-prefix=$(pwd)=/koe5${RUSTFLAGS:+ $RUSTFLAGS}" ;;
esac
