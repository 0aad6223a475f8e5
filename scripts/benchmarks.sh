#!/usr/bin/env bash
# Measures the benchmarks on this machine and writes docs/benchmarks.md:
#   scripts/benchmarks.sh              # every section: uploads of 100 MiB and 1 GiB, the digest
#                                      # pass (100 MiB, 1 GiB, 10 GiB warm; 1 GiB cold, which
#                                      # needs root to drop the page cache), many jobs at once,
#                                      # the scheduler, publish latency of a watch job, the
#                                      # state store's cost per upload (JSON against SQLite),
#                                      # metadata and COG verdict of a 2 GiB sparse COG (geo)
#   SECTIONS=soak scripts/benchmarks.sh  # the daemon soaked with faults for SOAK_MINUTES (60)
#   SECTIONS=cluster scripts/benchmarks.sh  # the cluster on PostgreSQL (needs Debian's
#                                      # postgresql): failover after a SIGKILL (FAILOVER_RUNS, 10
#                                      # per lease), 1,000 cron jobs on 3 members against 1 daemon
#   BENCH_10G=1 scripts/benchmarks.sh  # also the 10 GiB upload (10 GiB of disk, and the in-memory
#                                      # emulator holds one 10 GiB copy: 12 GiB of RAM)
#   SECTIONS="digest publish" scripts/benchmarks.sh   # measure only these; the others keep
#                                      # their last figures
#   SECTIONS= scripts/benchmarks.sh    # measure nothing, only write docs/benchmarks.md again
# Run it on a quiet machine: the figures are wall-clock. Each section's figures are kept in
# docs/benchmarks.d/figures/<section>.txt with the date, machine and load they were measured at;
# the text around them is written by hand in docs/benchmarks.d/<section>.md, where the line
# `<!-- figures -->` marks their place. Nothing hand-written lives in docs/benchmarks.md itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/benchmarks.md
notes=docs/benchmarks.d
figures=$notes/figures
mkdir -p "$figures"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sections=${SECTIONS-"upload digest fanout scheduler publish state_store geo"}
upload_sizes="100MiB 1GiB"
[ "${BENCH_10G:-0}" = 1 ] && upload_sizes="$upload_sizes 10GiB"

# Keeps what a bench printed in $tmp as the figures of $1, under a line saying when and where.
keep() {
  {
    echo "Measured $(date -u +%Y-%m-%d) by \`scripts/benchmarks.sh\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r)), load average before: $2."
    echo
    grep -v -e '^writing' -e '^    Finished' -e '^     Running' "$tmp" || true
  } > "$figures/$1.txt"
}

for s in $sections; do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  case $s in
    upload)
      for size in $upload_sizes; do
        echo "== upload $size" >&2
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        BENCH_DIGEST_SIZES= BENCH_DIGEST_COLD= BENCH_SIZE=$size BENCH_LIMITED_SIZE=$size \
          cargo bench --quiet --bench upload 2>/dev/null > "$tmp"
        keep "upload-$size" "$load"
      done
      ;;
    digest)
      echo "== digest pass" >&2
      BENCH_DIGEST_ONLY=1 cargo bench --quiet --bench upload 2>/dev/null > "$tmp"
      keep digest "$load"
      ;;
    fanout | scheduler | publish | state_store | geo)
      echo "== $s" >&2
      cargo bench --quiet --bench "$s" 2>/dev/null > "$tmp"
      keep "$s" "$load"
      ;;
    soak)
      echo "== soak (${SOAK_MINUTES:-60} minutes)" >&2
      SOAK_MINUTES=${SOAK_MINUTES:-60} cargo bench --quiet --bench soak 2>/dev/null > "$tmp"
      keep soak "$load"
      ;;
    cluster)
      echo "== cluster (failover ${FAILOVER_RUNS:-10} runs per lease; ${CLUSTER_JOBS:-1000} jobs for ${CLUSTER_SECONDS:-60} s, twice)" >&2
      cargo bench --quiet --bench cluster 2>/dev/null > "$tmp"
      keep cluster "$load"
      ;;
    *) echo "unknown section $s (upload digest fanout scheduler publish state_store soak cluster geo)" >&2; exit 2 ;;
  esac
done

# Prints the figures of $1: the dating line, then the output (fenced unless it is a table).
figures_of() {
  local f="$figures/$1.txt"
  if [ ! -f "$f" ]; then
    echo "(not measured yet: \`SECTIONS=$2 scripts/benchmarks.sh\`)"
    return
  fi
  head -n 1 "$f"
  echo
  if tail -n +3 "$f" | grep -q '^|'; then
    # A bench that prints a Markdown table prints its rows as text too: the table is enough.
    # Blank lines are kept (squeezed) so that two tables in a row stay two tables.
    tail -n +3 "$f" | grep -e '^|' -e '^$' | cat -s | sed '/./,$!d'
  else
    echo '```'
    tail -n +3 "$f"
    echo '```'
  fi
}

# Prints the notes of $1 with its figures in place of the marker.
section() {
  while IFS= read -r line; do
    if [ "$line" = '<!-- figures -->' ]; then
      figures_of "$1" "$1"
    else
      printf '%s\n' "$line"
    fi
  done < "$notes/$1.md"
  echo
}

{
  echo "# stac-uploadd benchmark figures"
  echo
  echo "Written by \`scripts/benchmarks.sh\` from the figures each section last measured (its first"
  echo "line says when, on what, and how busy the machine was) and the notes in \`docs/benchmarks.d/\`."
  echo
  echo "Each upload runs in a child process (its peak RSS and CPU are its own); the emulator is a separate process on 127.0.0.1."
  echo "The Python client is the straightforward one publishers write (\`scripts/python_client.py\`: hashlib, requests, 100 MiB parts (larger past 10,000 MiB: at most 100) in sequence), run against the same emulator on the same file."
  echo
  for size in 100MiB 1GiB 10GiB; do
    [ -f "$figures/upload-$size.txt" ] || continue
    echo "## Upload of $size"
    echo
    figures_of "upload-$size" upload
    echo
  done
  for s in digest fanout scheduler publish state_store soak cluster geo; do
    section "$s"
  done
  cat "$notes/reading.md"
} > "$out"
echo "wrote $out" >&2
