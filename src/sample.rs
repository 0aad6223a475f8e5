//! Deterministic sample data: the demo's files, and the tests' and benchmarks'.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Writes `size` deterministic pseudo-random bytes (incompressible, like real imagery) and returns
/// their sha256 in hex. Also used by the tests and benchmarks.
pub fn write_sample(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    write_after(path, &[], size, seed)
}

/// Writes a cloud-optimized GeoTIFF of `size` bytes (at least 400): an LV95 image in 256x256
/// tiles, 1024x1024 with two overviews from 64 KiB on, else one tile, laid out as GDAL's COG
/// driver does ([`cog_header`]), whose tiles are pseudo-random bytes. A valid COG to
/// `validate` (which reads the layout, not the pixels), for the demo and the tests. Returns the
/// sha256 in hex.
pub fn write_sample_cog(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    let width = if size >= 64 << 10 { 1024 } else { 256 };
    let header = cog_header(width, 256, size);
    anyhow::ensure!(
        header.len() as u64 <= size,
        "a COG of {size} bytes cannot hold its header"
    );
    write_after(path, &header, size, seed)
}

/// Writes a JSON document of `size` bytes (at least 40): an object with the `seed`, and a
/// string that pads it. Returns the sha256 in hex.
pub fn write_sample_json(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    let head = format!("{{\"seed\": {seed:20}, \"sample\": \"");
    let pad = usize::try_from(size.saturating_sub(head.len() as u64 + 3))?;
    let text = format!("{head}{}\"}}\n", "x".repeat(pad));
    std::fs::write(path, &text)?;
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

/// One TIFF tag's value.
enum TagValue {
    Short(Vec<u16>),
    Long(Vec<u32>),
    Double(Vec<f64>),
}

impl TagValue {
    fn kind_count_bytes(&self) -> (u16, u32, Vec<u8>) {
        match self {
            TagValue::Short(v) => (
                3,
                v.len() as u32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TagValue::Long(v) => (
                4,
                v.len() as u32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TagValue::Double(v) => (
                12,
                v.len() as u32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        }
    }
}

/// The header of a cloud-optimized GeoTIFF of `file_size` bytes (little-endian classic TIFF, so
/// under 4 GiB): a `width` x `width` LV95 image (EPSG:2056, 1 m pixels, Bern) in `tile` x `tile`
/// DEFLATE tiles with an overview per halving down to one tile, laid out as GDAL's COG driver
/// does: every IFD (full resolution first) with its tag data, then the tiles (from the end of
/// the header), the smallest overview's first and the full resolution's last, each
/// `(file_size - header) / tiles` bytes long. What the tiles hold is the caller's (the benches leave them
/// a hole of a sparse file).
pub fn cog_header(width: u32, tile: u32, file_size: u64) -> Vec<u8> {
    // The header's length does not depend on the offsets it holds: lay it out once to learn
    // where the tiles start, then again with the tiles there.
    let data_start = cog_ifds(width, tile, 0, 0).len() as u64;
    let tiles: u64 = cog_levels(width, tile)
        .iter()
        .map(|w| cog_tiles(*w, tile))
        .sum();
    let tile_len = file_size.saturating_sub(data_start) / tiles.max(1);
    cog_ifds(width, tile, data_start, tile_len)
}

/// The widths of a COG's images: full resolution, then each overview down to one tile.
fn cog_levels(width: u32, tile: u32) -> Vec<u32> {
    let mut levels = vec![width];
    let mut w = width;
    while w > tile {
        w /= 2;
        levels.push(w);
    }
    levels
}

fn cog_tiles(width: u32, tile: u32) -> u64 {
    u64::from(width.div_ceil(tile)).pow(2)
}

/// The IFDs of [`cog_header`], the tiles from `data_start` on, `tile_len` bytes each.
fn cog_ifds(width: u32, tile: u32, data_start: u64, tile_len: u64) -> Vec<u8> {
    let levels = cog_levels(width, tile);
    // Offsets: the smallest image's tiles first.
    let mut next = data_start;
    let mut offsets = vec![Vec::new(); levels.len()];
    for (i, w) in levels.iter().enumerate().rev() {
        for _ in 0..cog_tiles(*w, tile) {
            offsets[i].push(next as u32);
            next += tile_len;
        }
    }
    let mut out = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
    for (i, w) in levels.iter().enumerate() {
        let n = cog_tiles(*w, tile) as usize;
        let mut tags = vec![
            (254u16, TagValue::Long(vec![u32::from(i > 0)])),
            (256, TagValue::Long(vec![*w])),
            (257, TagValue::Long(vec![*w])),
            (258, TagValue::Short(vec![8])),
            (259, TagValue::Short(vec![8])),
            (262, TagValue::Short(vec![1])),
            (277, TagValue::Short(vec![1])),
            (284, TagValue::Short(vec![1])),
            (322, TagValue::Short(vec![tile as u16])),
            (323, TagValue::Short(vec![tile as u16])),
            (324, TagValue::Long(offsets[i].clone())),
            (325, TagValue::Long(vec![tile_len as u32; n])),
            (339, TagValue::Short(vec![1])),
        ];
        if i == 0 {
            // Bern, LV95 (EPSG:2056), 1 m pixels, PixelIsArea.
            tags.push((33550, TagValue::Double(vec![1.0, 1.0, 0.0])));
            tags.push((
                33922,
                TagValue::Double(vec![0.0, 0.0, 0.0, 2_560_000.0, 1_230_000.0, 0.0]),
            ));
            tags.push((
                34735,
                TagValue::Short(vec![
                    1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 2056,
                ]),
            ));
        }
        let ifd_at = out.len() as u32;
        let data_at = ifd_at + 2 + 12 * tags.len() as u32 + 4;
        let mut ifd = (tags.len() as u16).to_le_bytes().to_vec();
        let mut data = Vec::new();
        for (tag, value) in &tags {
            let (kind, count, bytes) = value.kind_count_bytes();
            ifd.extend(tag.to_le_bytes());
            ifd.extend(kind.to_le_bytes());
            ifd.extend(count.to_le_bytes());
            if bytes.len() <= 4 {
                let mut inline = [0u8; 4];
                inline[..bytes.len()].copy_from_slice(&bytes);
                ifd.extend(inline);
            } else {
                ifd.extend((data_at + data.len() as u32).to_le_bytes());
                data.extend(&bytes);
                if data.len() % 2 == 1 {
                    data.push(0);
                }
            }
        }
        let end = data_at + data.len() as u32;
        let next_ifd = if i + 1 < levels.len() { end } else { 0 };
        ifd.extend(next_ifd.to_le_bytes());
        out.extend(ifd);
        out.extend(data);
    }
    out
}

/// Writes a zip archive of `size` bytes (at least 114) holding one stored member, `data.bin`,
/// of pseudo-random bytes: what `validate` reads of a zip (its end-of-central-directory record
/// and central directory) is there and right, and so is the member's CRC-32. Returns the sha256
/// in hex.
pub fn write_sample_zip(path: &Path, size: u64, seed: u64) -> anyhow::Result<String> {
    const NAME: &[u8] = b"data.bin";
    let overhead = (30 + 46 + 22 + 2 * NAME.len()) as u64;
    anyhow::ensure!(
        size >= overhead,
        "a zip of {size} bytes cannot hold its records"
    );
    let n = u32::try_from(size - overhead)
        .map_err(|_| anyhow::anyhow!("a sample zip holds less than 4 GiB"))?;
    let mut crc = flate2::Crc::new();
    random_bytes(seed, u64::from(n), |b| {
        crc.update(b);
        Ok(())
    })?;
    let crc = crc.sum();
    let name_len = NAME.len() as u16;
    // Version 2.0, no flags, stored, 1980-01-01 00:00.
    let common = |out: &mut Vec<u8>| {
        for v in [20u16, 0, 0, 0, 0x21] {
            out.extend(v.to_le_bytes());
        }
        out.extend(crc.to_le_bytes());
        out.extend(n.to_le_bytes());
        out.extend(n.to_le_bytes());
        out.extend(name_len.to_le_bytes());
        out.extend(0u16.to_le_bytes());
    };
    let mut local = 0x0403_4b50u32.to_le_bytes().to_vec();
    common(&mut local);
    local.extend(NAME);
    let mut tail = 0x0201_4b50u32.to_le_bytes().to_vec();
    tail.extend(20u16.to_le_bytes());
    common(&mut tail);
    // Comment length, disk, internal and external attributes, the local header's offset (0).
    tail.extend([0u8; 2 + 2 + 2 + 4 + 4]);
    tail.extend(NAME);
    let directory_at = local.len() as u32 + n;
    let directory_len = tail.len() as u32;
    tail.extend(0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        tail.extend(v.to_le_bytes());
    }
    tail.extend(directory_len.to_le_bytes());
    tail.extend(directory_at.to_le_bytes());
    tail.extend(0u16.to_le_bytes());
    write_between(path, &local, size, seed, &tail)
}

/// Writes `prefix`, then pseudo-random bytes up to `size` in all.
fn write_after(path: &Path, prefix: &[u8], size: u64, seed: u64) -> anyhow::Result<String> {
    write_between(path, prefix, size, seed, &[])
}

/// Writes `prefix`, pseudo-random bytes, then `suffix`: `size` bytes in all.
fn write_between(
    path: &Path,
    prefix: &[u8],
    size: u64,
    seed: u64,
    suffix: &[u8],
) -> anyhow::Result<String> {
    // Written beside and renamed into place, as a careful producer does.
    let tmp = path.with_extension("part");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut h = Sha256::new();
    f.write_all(prefix)?;
    h.update(prefix);
    let fixed = (prefix.len() + suffix.len()) as u64;
    random_bytes(seed, size.saturating_sub(fixed), |b| {
        h.update(b);
        f.write_all(b)
    })?;
    f.write_all(suffix)?;
    h.update(suffix);
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(hex::encode(h.finalize()))
}

/// `len` pseudo-random bytes of `seed` (xorshift: incompressible, like real imagery), handed
/// to `sink` in chunks.
fn random_bytes(
    seed: u64,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo;

    /// The demo's files are what their media types say, or its item job would refuse them.
    #[test]
    fn the_sample_cog_is_a_valid_cog_and_the_sample_json_parses() {
        let dir = tempfile::tempdir().unwrap();
        let cog = dir.path().join("s2.tif");
        let sha = write_sample_cog(&cog, 3 << 20, 7).unwrap();
        let bytes = std::fs::read(&cog).unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        let v = geo::media::check_file(
            &cog,
            "image/tiff; application=geotiff; profile=cloud-optimized",
        );
        assert!(v.is_valid() && v.warnings.is_empty(), "{v:?}");
        let m = geo::read_metadata(&cog).unwrap();
        assert_eq!(
            (m.epsg, m.gsd, m.size),
            (Some(2056), Some(1.0), Some((1024, 1024)))
        );

        let json = dir.path().join("metadata.json");
        write_sample_json(&json, 2048, 1).unwrap();
        assert_eq!(std::fs::metadata(&json).unwrap().len(), 2048);
        assert!(geo::media::check_file(&json, "application/json").is_valid());

        let zip = dir.path().join("composite.zip");
        let sha = write_sample_zip(&zip, 100_000, 3).unwrap();
        let bytes = std::fs::read(&zip).unwrap();
        assert_eq!(bytes.len(), 100_000);
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        let v = geo::media::check_file(&zip, "application/zip");
        assert!(v.is_valid() && v.checked.is_some(), "{v:?}");
    }
}
