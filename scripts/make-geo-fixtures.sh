#!/usr/bin/env bash
# Makes the raster fixtures of the metadata readers' differential tests (issue 23) with GDAL:
# small files in the CRSs publishers use (LV95, LV03, UTM 32N, Web Mercator, WGS84), classic
# and BigTIFF, striped, tiled and cloud-optimized, plus the files a COG validator must refuse
# (striped and big, overviews appended after the data) or accept with a warning (big, tiled,
# no overviews), and damaged ones (truncated, empty, looping IFDs, offsets past the end).
# GDAL is the oracle of the tests, never a dependency of the product; the outputs are
# committed, so only whoever changes this script needs GDAL (Debian: apt-get install gdal-bin).
#
#   scripts/make-geo-fixtures.sh [OUT]      # default tests/fixtures/geo
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-tests/fixtures/geo}
command -v gdal_translate >/dev/null || { echo "needs GDAL (apt-get install gdal-bin)"; exit 1; }
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# A gradient raster of W x H pixels as an ENVI-free VRT source: gdal_create fills a constant,
# and a constant compresses to nothing, which is what we want: fixtures stay a few KB.
make() { # make NAME EPSG ULX ULY PIXEL W H [creation options...]
    local name=$1 epsg=$2 ulx=$3 uly=$4 px=$5 w=$6 h=$7
    shift 7
    gdal_create -q -of GTiff -outsize "$w" "$h" -bands 1 -ot Byte -burn 7 \
        -a_srs "EPSG:$epsg" -a_ullr "$ulx" "$uly" \
        "$(python3 -c "print($ulx + $w * $px)")" "$(python3 -c "print($uly - $h * $px)")" \
        "$WORK/$name.src.tif"
    gdal_translate -q -co COMPRESS=DEFLATE "$@" "$WORK/$name.src.tif" "$OUT/$name.tif"
}

# Bern in LV95 (2 m pixels), striped, classic TIFF.
make lv95_striped 2056 2600000 1200100 2 64 48
# The same place in LV03, tiled (16x16 tiles: tiny).
make lv03_tiled 21781 600000 200100 2 64 48 -co TILED=YES -co BLOCKXSIZE=16 -co BLOCKYSIZE=16
# Zurich in UTM 32N, a COG (GDAL's COG driver: tiled, overviews, IFDs first).
gdal_create -q -of GTiff -outsize 1024 1024 -bands 1 -ot Byte -burn 3 -a_srs EPSG:32632 \
    -a_ullr 460000 5250000 470240 5239760 "$WORK/utm.src.tif"
gdal_translate -q -of COG -co COMPRESS=DEFLATE -co BLOCKSIZE=256 -co OVERVIEWS=AUTO \
    "$WORK/utm.src.tif" "$OUT/utm32n_cog.tif"
# Switzerland in Web Mercator, BigTIFF.
make webmerc_bigtiff 3857 650000 6100000 1000 64 48 -co BIGTIFF=YES
# WGS84 degrees, pixel-is-point.
make wgs84_point 4326 5.9 47.9 0.01 64 48 -mo AREA_OR_POINT=Point
# A rotated grid: GDAL writes ModelTransformation instead of tiepoint + scale.
# (gdal_translate -a_gt needs GDAL 3.8; bookworm has 3.6: through its Python bindings,
# Debian's python3-gdal, for the system python3.)
/usr/bin/python3 - "$OUT/lv95_striped.tif" "$OUT/lv95_rotated.tif" <<'PY'
import sys
from osgeo import gdal
gdal.UseExceptions()
ds = gdal.Translate(sys.argv[2], sys.argv[1], creationOptions=["COMPRESS=DEFLATE"])
ds.SetGeoTransform([2600000, 2, 0.5, 1200100, 0.5, -2])
ds = None
PY

# COG verdicts.
# Big (2000x1000) and striped: not a COG.
make big_striped 2056 2600000 1200100 2 2000 1000
# Tiled, overviews appended after the data by gdaladdo: not a COG ("NOT a valid cloud
# optimized GeoTIFF" in rio-cogeo: the overviews' IFDs come after the image data).
make appended_overviews 2056 2600000 1200100 2 1024 1024 -co TILED=YES
gdaladdo -q -r nearest "$OUT/appended_overviews.tif" 2 4
# Big, tiled, no overviews: valid with a warning.
make big_tiled_no_overviews 2056 2600000 1200100 2 1024 1024 -co TILED=YES

# Damaged.
head -c 600 "$OUT/utm32n_cog.tif" >"$OUT/truncated_cog.tif"
: >"$OUT/empty.tif"
python3 - "$OUT" <<'PY'
import struct, sys, shutil
out = sys.argv[1]
src = open(f"{out}/lv95_striped.tif", "rb").read()
assert src[:2] == b"II" and struct.unpack_from("<H", src, 2)[0] == 42
first = struct.unpack_from("<I", src, 4)[0]
n = struct.unpack_from("<H", src, first)[0]
next_at = first + 2 + 12 * n
# The first IFD's "next IFD" points back at itself: a loop.
loop = bytearray(src)
struct.pack_into("<I", loop, next_at, first)
open(f"{out}/looping_ifds.tif", "wb").write(loop)
# The first IFD itself past the end of the file.
past = bytearray(src)
struct.pack_into("<I", past, 4, len(src) + 4096)
open(f"{out}/offset_past_end.tif", "wb").write(past)
PY

# The media-type checks' other formats (src/geo/container.rs), made with Python alone: JSON that
# parses and JSON that does not, a GeoJSON FeatureCollection, a zip made by zipfile and the same
# cut short, and a Parquet-like file (PAR1, a footer length, PAR1: what the check reads; no
# Parquet writer needed) and the same cut short.
python3 - "$OUT" <<'PY'
import json, sys, zipfile
out = sys.argv[1]
fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "Bern"},
      "geometry": {"type": "Polygon", "coordinates": [[[7.43, 46.94], [7.45, 46.94], [7.45, 46.95],
      [7.43, 46.95], [7.43, 46.94]]]}}]}
open(f"{out}/bern.geojson", "w").write(json.dumps(fc) + "\n")
open(f"{out}/list.json", "w").write("[1, 2, 3]\n")
open(f"{out}/truncated.json", "w").write(json.dumps(fc)[:60])
with zipfile.ZipFile(f"{out}/archive.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr(zipfile.ZipInfo("bern.geojson", date_time=(2026, 12, 1, 10, 10, 10)), json.dumps(fc))
data = open(f"{out}/archive.zip", "rb").read()
open(f"{out}/truncated.zip", "wb").write(data[: len(data) // 2])
footer = b"\x15\x00" * 8
parquet = b"PAR1" + b"\x00" * 16 + footer + len(footer).to_bytes(4, "little") + b"PAR1"
open(f"{out}/table.parquet", "wb").write(parquet)
open(f"{out}/truncated.parquet", "wb").write(parquet[:-6])
PY
ls -l "$OUT"
