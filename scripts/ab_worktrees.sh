# Sourced by ab_train.sh and ab_decode.sh: checks OLD and NEW out into temporary worktrees, $TMP/old and $TMP/new,
# removed again when the script exits.
TMP=$(mktemp -d)
trap 'git worktree remove --force "$TMP/old"; git worktree remove --force "$TMP/new"; rm -rf "$TMP"' EXIT
git worktree add -q --detach "$TMP/old" "$OLD"
git worktree add -q --detach "$TMP/new" "$NEW"
