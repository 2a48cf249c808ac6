# Shared by the issue-24 scripts that test one change at a time on the 64-wide SCI row (sourced, not run).
# The sourcing script fills the associative array SETTINGS (a setting name -> its --set flags), sets
# DEFAULT_SCREEN and calls `w64_rows "$@"`:
#   w64_rows screen [extra rl-align args]   # seed 0 of every setting in $SCREEN (default: $DEFAULT_SCREEN)
#   SETTING=NAME w64_rows seeds [extra]     # seeds ${SEEDS:-1 2} of one setting
# Runs land in runs/i24-w64-NAME-sN (experiments/i24_sci_row.sh); the reference row is runs/i24-w64base-sN.
W64=(--set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256)
w64_flags() {  # setting name -> its --set flags; an unknown name fails (before any run: every name is checked first)
  [[ -v "SETTINGS[$1]" ]] || { echo "unknown setting $1; known: ${!SETTINGS[*]}" >&2; return 1; }
  echo "${SETTINGS[$1]}"
}
w64_rows() {
  local what=${1:?screen | seeds}; shift
  local s
  case "$what" in
    screen)
      for s in ${SCREEN:-$DEFAULT_SCREEN}; do w64_flags "$s" >/dev/null; done
      for s in ${SCREEN:-$DEFAULT_SCREEN}; do
        # shellcheck disable=SC2046
        TAG=w64-$s SEEDS=0 experiments/i24_sci_row.sh "${W64[@]}" $(w64_flags "$s") "$@"
      done ;;
    seeds)
      : "${SETTING:?}"
      w64_flags "$SETTING" >/dev/null
      # shellcheck disable=SC2046
      TAG=w64-$SETTING SEEDS="${SEEDS:-1 2}" experiments/i24_sci_row.sh "${W64[@]}" $(w64_flags "$SETTING") "$@" ;;
    *) echo "expected screen or seeds, got $what" >&2; return 1 ;;
  esac
}
