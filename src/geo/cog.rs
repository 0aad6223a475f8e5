//! Is a TIFF what `image/tiff; application=geotiff` (a readable TIFF) or
//! `...; profile=cloud-optimized` (a COG) says? Headers only.
//!
//! The COG rules are rio-cogeo's `cog_validate` (itself GDAL's
//! `validate_cloud_optimized_geotiff.py`): tiled past 512 px, internal overviews in decreasing
//! size, the IFDs at the start of the file, each image's data after its smaller overview's (the
//! main image's last), a big image without overviews valid with a warning. Ours on top, since
//! rio-cogeo reads the header only and a COG cut to 600 bytes passes it: the IFD chain is walked
//! to its end (bounded, no loops), every block lies inside the file, and the block tables match
//! the image's size.
//!
//! The `tiff` crate reads the directories and tag values (with its 1 MiB cap on any one value);
//! the walk along the chain is ours so that a loop, a pointer past the end or an IFD declaring
//! 2^32 entries is refused before anything is read for it.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};

use tiff::decoder::{Decoder, Limits};
use tiff::tags::{IfdPointer, Tag};
use tiff::{Directory, TiffError};

/// The most IFDs walked: a COG has one per overview level and mask (a 2^20 px image has 11
/// levels), so 64 is generous; a longer chain is refused rather than read.
pub const MAX_IFDS: usize = 64;
/// The most entries an IFD may declare: real files have a few dozen tags.
pub const MAX_IFD_ENTRIES: u64 = 4096;
/// Past this size (either side) a COG must be tiled and should have overviews (rio-cogeo).
pub const TILING_THRESHOLD: u32 = 512;
/// Where rio-cogeo wants the first IFD: right after the header and GDAL's ghost header.
pub const FIRST_IFD_MAX_OFFSET: u64 = 300;
/// The advice every layout error ends with.
const REWRITE: &str = "rewrite it with gdal_translate -of COG";

/// What a check found: errors make the file not what its media type says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// What an IFD holds, as far as the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    /// Where its IFD starts.
    pub ifd: u64,
    pub kind: Kind,
    pub width: u32,
    pub height: u32,
    /// `Some((tile width, tile height))` when tiled; `None` for strips.
    pub tile: Option<(u32, u32)>,
    /// The offset of its first non-empty block of the first plane (`None`: all blocks empty).
    pub first_block: Option<u64>,
}

/// An IFD's role, from NewSubfileType (bit 0: reduced resolution, bit 2: transparency mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Main,
    /// The n-th overview (0 the largest) of the main image.
    Overview(usize),
    Mask,
    /// Another full-resolution page.
    Page,
}

/// The structure of a TIFF: its images in IFD order, and GDAL's ghost header if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Structure {
    pub images: Vec<Image>,
    pub ghost: Option<String>,
}

impl Image {
    fn name(&self) -> String {
        match self.kind {
            Kind::Main => "the main image".into(),
            Kind::Overview(n) => format!("overview {n}"),
            Kind::Mask => format!("the mask at byte {}", self.ifd),
            Kind::Page => format!("the page at byte {}", self.ifd),
        }
    }
}

/// A readable TIFF: its IFD chain ends, every image's block tables match its size and every block
/// lies inside the `len` bytes of the file.
pub fn check_geotiff<R: Read + Seek>(r: R, len: u64) -> Report {
    match read_structure(r, len) {
        Ok(_) => Report::default(),
        Err(e) => Report {
            errors: vec![e],
            warnings: Vec::new(),
        },
    }
}

/// A cloud-optimized GeoTIFF: [`check_geotiff`], then rio-cogeo's layout rules.
pub fn check_cog<R: Read + Seek>(r: R, len: u64) -> Report {
    match read_structure(r, len) {
        Ok(s) => cog_rules(&s),
        Err(e) => Report {
            errors: vec![e],
            warnings: Vec::new(),
        },
    }
}

/// The layout rules of a COG on a readable TIFF.
pub(crate) fn cog_rules(s: &Structure) -> Report {
    let mut report = Report::default();
    let errors = &mut report.errors;
    let Some(main) = s.images.first() else {
        errors.push("no image".into());
        return report;
    };
    let overviews: Vec<&Image> = s
        .images
        .iter()
        .filter(|i| matches!(i.kind, Kind::Overview(_)))
        .collect();
    let big = |i: &Image| i.width > TILING_THRESHOLD || i.height > TILING_THRESHOLD;

    if big(main) {
        if main.tile.is_none() {
            errors.push(format!(
                "not tiled: {}x{} pixels in strips (a COG larger than {TILING_THRESHOLD} px must \
                 be tiled, so that a client reads only the blocks it shows; {REWRITE})",
                main.width, main.height
            ));
        }
        if overviews.is_empty() {
            report.warnings.push(format!(
                "no overviews: {}x{} pixels (a COG larger than {TILING_THRESHOLD} px should have \
                 internal overviews, or a client zoomed out reads every block; gdal_translate -of \
                 COG adds them)",
                main.width, main.height
            ));
        }
    }
    if main.ifd > FIRST_IFD_MAX_OFFSET {
        errors.push(format!(
            "the first IFD is at byte {}: a COG has it at the start of the file (within the \
             first {FIRST_IFD_MAX_OFFSET} bytes), where a client's first read finds it ({REWRITE})",
            main.ifd
        ));
    }
    if s.ghost
        .as_deref()
        .is_some_and(|g| g.contains("KNOWN_INCOMPATIBLE_EDITION=YES"))
    {
        errors.push(format!(
            "GDAL's header says the file was edited after it was written as a COG \
             (KNOWN_INCOMPATIBLE_EDITION=YES): its layout is no longer optimized ({REWRITE})"
        ));
    }

    let mut larger = main;
    for o in &overviews {
        if !(o.width <= larger.width && o.height <= larger.height)
            || (o.width, o.height) == (larger.width, larger.height)
        {
            errors.push(format!(
                "{} ({}x{}) is not smaller than {} ({}x{}): overviews come in decreasing size \
                 ({REWRITE})",
                o.name(),
                o.width,
                o.height,
                larger.name(),
                larger.width,
                larger.height
            ));
        }
        if big(o) && o.tile.is_none() {
            errors.push(format!(
                "{} is not tiled: {}x{} pixels in strips ({REWRITE})",
                o.name(),
                o.width,
                o.height
            ));
        }
        if o.ifd < larger.ifd {
            errors.push(format!(
                "the IFD of {} (byte {}) comes before that of {} (byte {}): a COG's IFDs follow \
                 the images from the largest to the smallest ({REWRITE})",
                o.name(),
                o.ifd,
                larger.name(),
                larger.ifd
            ));
        }
        larger = o;
    }

    // Every IFD before any image data: a client reads the header once, then only blocks.
    let first_data = s
        .images
        .iter()
        .filter_map(|i| i.first_block.map(|b| (b, i)))
        .min_by_key(|(b, _)| *b);
    if let (Some((data, holder)), Some(late)) = (
        first_data,
        s.images.iter().max_by_key(|i| i.ifd).filter(|i| i.ifd > 0),
    ) && late.ifd > data
    {
        errors.push(format!(
            "the IFD of {} (byte {}) comes after image data (the first block of {}, byte {}): a \
             COG has all its IFDs before the data, so that one read at the start gets them \
             (overviews appended by gdaladdo, or a file edited in place; {REWRITE})",
            late.name(),
            late.ifd,
            holder.name(),
            data
        ));
    }

    // The data from the smallest overview to the main image: a client zoomed out reads the
    // start of the file only.
    let chain: Vec<&Image> = std::iter::once(main).chain(overviews).collect();
    for pair in chain.windows(2).rev() {
        let (bigger, smaller) = (pair[0], pair[1]);
        if let (Some(b), Some(s)) = (bigger.first_block, smaller.first_block)
            && b < s
        {
            errors.push(format!(
                "{}'s first block (byte {b}) comes before {}'s (byte {s}): a COG stores the \
                 smallest overview's data first and the main image's last (overviews appended \
                 after the data; {REWRITE})",
                capitalize(&bigger.name()),
                smaller.name(),
            ));
        }
    }
    report
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Walks the IFD chain of a TIFF of `len` bytes; the first damage found is the error.
pub(crate) fn read_structure<R: Read + Seek>(mut r: R, len: u64) -> Result<Structure, String> {
    if len == 0 {
        return Err("an empty file (0 bytes), not a TIFF".into());
    }
    let header = read_header(&mut r, len)?;
    check_ifd_at(&mut r, &header, header.first_ifd, len, "the first IFD")?;
    let ghost = read_ghost(&mut r, &header).map_err(|e| describe_io(&e))?;
    r.seek(SeekFrom::Start(0)).map_err(|e| describe_io(&e))?;
    let mut d = Decoder::new(r)
        .map_err(|e| format!("not a readable TIFF: {}", describe(&e)))?
        .with_limits(Limits::default());

    let mut images = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some(header.first_ifd);
    let mut overviews = 0;
    while let Some(at) = next {
        if !seen.insert(at) {
            return Err(format!(
                "the IFD chain loops back to byte {at}: a damaged file"
            ));
        }
        if seen.len() > MAX_IFDS {
            return Err(format!(
                "more than {MAX_IFDS} IFDs: not a raster this check reads"
            ));
        }
        let what = format!("the IFD at byte {at}");
        // The first was checked before the decoder read it.
        if !images.is_empty() {
            check_ifd_at(d.inner(), &header, at, len, &what)?;
        }
        let dir = d
            .read_directory(IfdPointer(at))
            .map_err(|e| format!("cannot read {what}: {}", describe(&e)))?;
        next = dir.next().map(|p| p.0);
        let image = read_image(&mut d, &dir, at, images.is_empty(), &mut overviews, len)
            .map_err(|e| format!("{what}: {e}"))?;
        images.push(image);
    }
    Ok(Structure { images, ghost })
}

struct Header {
    big_endian: bool,
    bigtiff: bool,
    first_ifd: u64,
}

fn read_header<R: Read + Seek>(r: &mut R, len: u64) -> Result<Header, String> {
    let mut b = [0u8; 16];
    let n = read_up_to(r, &mut b).map_err(|e| describe_io(&e))?;
    let b = &b[..n];
    let big_endian = match b.get(..2) {
        Some(b"II") => false,
        Some(b"MM") => true,
        _ => return Err("not a TIFF (it does not start with II or MM)".into()),
    };
    let u16_at = |i: usize| {
        b.get(i..i + 2).map(|s| {
            let s = [s[0], s[1]];
            if big_endian {
                u16::from_be_bytes(s)
            } else {
                u16::from_le_bytes(s)
            }
        })
    };
    let (bigtiff, first_ifd) = match u16_at(2) {
        Some(42) => (false, b.get(4..8).map(|s| uint(s, big_endian))),
        Some(43) => (true, b.get(8..16).map(|s| uint(s, big_endian))),
        Some(v) => return Err(format!("not a TIFF (version {v}, neither 42 nor 43)")),
        None => return Err("not a TIFF: the file ends inside its 8-byte header".into()),
    };
    let first_ifd = first_ifd.ok_or("the file ends inside its TIFF header (truncated)")?;
    if first_ifd == 0 {
        return Err("no image: the header points at no IFD".into());
    }
    if first_ifd >= len {
        return Err(format!(
            "the first IFD is at byte {first_ifd}, past the end of the file ({len} bytes): \
             truncated or damaged"
        ));
    }
    Ok(Header {
        big_endian,
        bigtiff,
        first_ifd,
    })
}

/// An unsigned integer of 2, 4 or 8 bytes in the file's byte order.
fn uint(s: &[u8], big_endian: bool) -> u64 {
    let mut v = 0u64;
    if big_endian {
        for &b in s {
            v = (v << 8) | u64::from(b);
        }
    } else {
        for &b in s.iter().rev() {
            v = (v << 8) | u64::from(b);
        }
    }
    v
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Refuses an IFD past the end, or one whose declared entries do not fit in the file or pass
/// [`MAX_IFD_ENTRIES`], before the decoder reads it (it would read entry after entry).
fn check_ifd_at<R: Read + Seek>(
    r: &mut R,
    h: &Header,
    at: u64,
    len: u64,
    what: &str,
) -> Result<(), String> {
    let (count_size, entry_size, next_size) = if h.bigtiff { (8, 20, 8) } else { (2, 12, 4) };
    if at.checked_add(count_size).is_none_or(|end| end > len) {
        return Err(format!(
            "{what} is at byte {at}, past the end of the file ({len} bytes): truncated or damaged"
        ));
    }
    r.seek(SeekFrom::Start(at)).map_err(|e| describe_io(&e))?;
    let mut b = [0u8; 8];
    let b = &mut b[..count_size as usize];
    r.read_exact(b).map_err(|e| describe_io(&e))?;
    let n = uint(b, h.big_endian);
    let end = n
        .checked_mul(entry_size)
        .and_then(|e| e.checked_add(at + count_size + next_size));
    if n > MAX_IFD_ENTRIES {
        return Err(format!(
            "{what} declares {n} entries (a TIFF image has a few dozen tags): damaged or hostile"
        ));
    }
    if end.is_none_or(|end| end > len) {
        return Err(format!(
            "{what} ({n} entries) ends past the end of the file ({len} bytes): truncated"
        ));
    }
    Ok(())
}

/// GDAL's "ghost header" after the TIFF header: `GDAL_STRUCTURAL_METADATA_SIZE=000140 bytes\n`
/// then that many bytes of `KEY=VALUE` lines. Absent in files GDAL did not write.
fn read_ghost<R: Read + Seek>(r: &mut R, h: &Header) -> io::Result<Option<String>> {
    const MAGIC: &[u8] = b"GDAL_STRUCTURAL_METADATA_SIZE=";
    r.seek(SeekFrom::Start(if h.bigtiff { 16 } else { 8 }))?;
    let mut head = [0u8; 43];
    let n = read_up_to(r, &mut head)?;
    let Some(rest) = head[..n].strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let size: usize = match std::str::from_utf8(&rest[..rest.len().min(6)])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => s,
        None => return Ok(None),
    };
    let mut body = vec![0u8; size.min(4096)];
    let n = read_up_to(r, &mut body)?;
    body.truncate(n);
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

fn read_image<R: Read + Seek>(
    d: &mut Decoder<R>,
    dir: &Directory,
    at: u64,
    first: bool,
    overviews: &mut usize,
    len: u64,
) -> Result<Image, String> {
    let mut t = d.read_directory_tags(dir);
    let mut num = |tag: Tag, name: &str| -> Result<Option<u64>, String> {
        t.find_tag_unsigned::<u64>(tag)
            .map_err(|e| format!("cannot read its {name}: {}", describe(&e)))
    };
    let width = num(Tag::ImageWidth, "ImageWidth")?.ok_or("no ImageWidth")?;
    let height = num(Tag::ImageLength, "ImageLength")?.ok_or("no ImageLength")?;
    let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(format!("an image of {width}x{height} pixels"));
    };
    if width == 0 || height == 0 {
        return Err(format!("an image of {width}x{height} pixels"));
    }
    let subfile = num(Tag::NewSubfileType, "NewSubfileType")?.unwrap_or(0);
    let kind = if first {
        Kind::Main
    } else if subfile & 4 != 0 {
        Kind::Mask
    } else if subfile & 1 != 0 {
        *overviews += 1;
        Kind::Overview(*overviews - 1)
    } else {
        Kind::Page
    };
    let samples = num(Tag::SamplesPerPixel, "SamplesPerPixel")?.unwrap_or(1);
    let planes = match num(Tag::PlanarConfiguration, "PlanarConfiguration")? {
        Some(2) => samples.max(1),
        _ => 1,
    };
    let tile_w = num(Tag::TileWidth, "TileWidth")?;
    let tile_h = num(Tag::TileLength, "TileLength")?;
    let rows = num(Tag::RowsPerStrip, "RowsPerStrip")?;
    let (w, h) = (u64::from(width), u64::from(height));
    let (tile, per_plane, what, offsets_tag, counts_tag) = match (tile_w, tile_h) {
        (Some(tw), Some(th)) => {
            if tw == 0 || th == 0 {
                return Err(format!("tiles of {tw}x{th} pixels"));
            }
            let tile = (
                u32::try_from(tw).map_err(|_| format!("tiles {tw} pixels wide"))?,
                u32::try_from(th).map_err(|_| format!("tiles {th} pixels high"))?,
            );
            let (across, down) = (w.div_ceil(tw), h.div_ceil(th));
            (
                Some(tile),
                across * down,
                format!("{across}x{down} tiles"),
                Tag::TileOffsets,
                Tag::TileByteCounts,
            )
        }
        (None, None) => {
            let rows = rows.unwrap_or(h).clamp(1, h);
            let strips = h.div_ceil(rows);
            (
                None,
                strips,
                format!("{strips} strips of {rows} rows"),
                Tag::StripOffsets,
                Tag::StripByteCounts,
            )
        }
        _ => return Err("TileWidth without TileLength, or the reverse".into()),
    };
    let expected = per_plane * planes;
    let (oname, cname) = if tile.is_some() {
        ("TileOffsets", "TileByteCounts")
    } else {
        ("StripOffsets", "StripByteCounts")
    };
    let mut table = |tag: Tag, name: &str| -> Result<Vec<u64>, String> {
        let v = t
            .find_tag(tag)
            .map_err(|e| format!("cannot read its {name}: {}", describe(&e)))?
            .ok_or_else(|| format!("no {name}: where its data is is not said"))?
            .into_u64_vec()
            .map_err(|e| format!("cannot read its {name}: {}", describe(&e)))?;
        if v.is_empty() {
            return Err(format!("an empty {name}"));
        }
        Ok(v)
    };
    let offsets = table(offsets_tag, oname)?;
    let counts = table(counts_tag, cname)?;
    if offsets.len() != counts.len() {
        return Err(format!(
            "{} {oname} but {} {cname}",
            offsets.len(),
            counts.len()
        ));
    }
    if offsets.len() as u64 != expected {
        let planes = if planes > 1 {
            format!(" in {planes} planes")
        } else {
            String::new()
        };
        return Err(format!(
            "{} {oname} for {width}x{height} pixels in {what}{planes} (expected {expected})",
            offsets.len()
        ));
    }
    for (i, (&o, &c)) in offsets.iter().zip(&counts).enumerate() {
        // GDAL writes an empty (sparse) block as offset 0, count 0; readers fill it in.
        if c == 0 {
            continue;
        }
        if o.checked_add(c).is_none_or(|end| end > len) {
            return Err(format!(
                "block {i} (bytes {o} to {}) ends past the end of the file ({len} bytes): \
                 truncated or damaged",
                o.saturating_add(c)
            ));
        }
    }
    let first_block = offsets
        .iter()
        .zip(&counts)
        .take(per_plane as usize)
        .find(|(o, c)| **o > 0 && **c > 0)
        .map(|(o, _)| *o);
    Ok(Image {
        ifd: at,
        kind,
        width,
        height,
        tile,
        first_block,
    })
}

fn describe(e: &TiffError) -> String {
    match e {
        TiffError::IoError(io) => describe_io(io),
        TiffError::FormatError(tiff::TiffFormatError::CycleInOffsets) => {
            "the IFD chain loops: a damaged file".into()
        }
        TiffError::LimitsExceeded => "a tag value larger than 1 MiB (damaged or hostile)".into(),
        e => e.to_string(),
    }
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            "the file ends where its header says there is more (truncated)".into()
        }
        _ => format!("cannot read the file: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::read::{Counting, SeekBuf};
    use super::*;

    fn image(kind: Kind, ifd: u64, size: u32, tiled: bool, first_block: u64) -> Image {
        Image {
            ifd,
            kind,
            width: size,
            height: size,
            tile: tiled.then_some((256, 256)),
            first_block: Some(first_block),
        }
    }

    fn cog() -> Structure {
        Structure {
            images: vec![
                image(Kind::Main, 16, 2048, true, 9000),
                image(Kind::Overview(0), 400, 1024, true, 5000),
                image(Kind::Overview(1), 800, 512, true, 2000),
            ],
            ghost: None,
        }
    }

    #[test]
    fn a_well_laid_out_cog_passes() {
        assert_eq!(cog_rules(&cog()), Report::default());
    }

    #[test]
    fn data_of_the_main_image_before_an_overview_is_an_error() {
        let mut s = cog();
        s.images[0].first_block = Some(3000);
        let r = cog_rules(&s);
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(
            r.errors[0]
                .starts_with("The main image's first block (byte 3000) comes before overview 0's"),
            "{r:?}"
        );
    }

    #[test]
    fn overviews_out_of_size_order_are_an_error() {
        let mut s = cog();
        s.images.swap(1, 2);
        s.images[1].kind = Kind::Overview(0);
        s.images[2].kind = Kind::Overview(1);
        let r = cog_rules(&s);
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("overview 1 (1024x1024) is not smaller than overview 0")),
            "{r:?}"
        );
    }

    #[test]
    fn a_big_overview_in_strips_and_a_late_first_ifd_are_errors() {
        let mut s = cog();
        s.images[0].width = 4096;
        s.images[1].tile = None;
        s.images[0].ifd = 301;
        let r = cog_rules(&s);
        assert!(
            r.errors
                .iter()
                .any(|e| e.starts_with("overview 0 is not tiled")),
            "{r:?}"
        );
        assert!(
            r.errors
                .iter()
                .any(|e| e.starts_with("the first IFD is at byte 301")),
            "{r:?}"
        );
    }

    #[test]
    fn an_edited_cog_is_an_error() {
        let mut s = cog();
        s.ghost = Some("LAYOUT=IFDS_BEFORE_DATA\nKNOWN_INCOMPATIBLE_EDITION=YES\n".into());
        assert!(cog_rules(&s).errors[0].contains("KNOWN_INCOMPATIBLE_EDITION=YES"));
    }

    /// A little-endian classic TIFF: `ifds` chained from byte 8, entries (tag, type, count, the
    /// 4 value bytes as a u32: inline values only), padded with zeros to `len` bytes.
    fn tiff(ifds: &[Vec<(u16, u16, u32, u32)>], len: usize) -> Vec<u8> {
        let mut f = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
        for (i, entries) in ifds.iter().enumerate() {
            f.extend_from_slice(&(entries.len() as u16).to_le_bytes());
            for &(tag, ty, count, value) in entries {
                f.extend_from_slice(&tag.to_le_bytes());
                f.extend_from_slice(&ty.to_le_bytes());
                f.extend_from_slice(&count.to_le_bytes());
                f.extend_from_slice(&value.to_le_bytes());
            }
            let next = if i + 1 < ifds.len() { f.len() + 4 } else { 0 };
            f.extend_from_slice(&(next as u32).to_le_bytes());
        }
        assert!(f.len() <= len);
        f.resize(len, 0);
        f
    }

    const SHORT: u16 = 3;
    const LONG: u16 = 4;

    /// A 16x16 image in one strip of 256 bytes at byte 200.
    fn main_ifd() -> Vec<(u16, u16, u32, u32)> {
        vec![
            (256, SHORT, 1, 16),
            (257, SHORT, 1, 16),
            (258, SHORT, 1, 8),
            (262, SHORT, 1, 1),
            (273, LONG, 1, 200),
            (278, SHORT, 1, 16),
            (279, LONG, 1, 256),
        ]
    }

    /// An 8x8 overview in 16x16 tiles, with these TileOffsets and TileByteCounts.
    fn overview(offsets: (u16, u32), counts: (u16, u32)) -> Vec<(u16, u16, u32, u32)> {
        vec![
            (254, LONG, 1, 1),
            (256, SHORT, 1, 8),
            (257, SHORT, 1, 8),
            (262, SHORT, 1, 1),
            (322, SHORT, 1, 16),
            (323, SHORT, 1, 16),
            (324, offsets.0, 1, offsets.1),
            (325, counts.0, 1, counts.1),
        ]
    }

    fn structure_of(f: Vec<u8>) -> Result<Structure, String> {
        let len = f.len() as u64;
        read_structure(io::Cursor::new(f), len)
    }

    #[test]
    fn a_readable_tiff_is_walked_to_its_end() {
        let s = structure_of(tiff(&[main_ifd(), overview((LONG, 460), (LONG, 40))], 500)).unwrap();
        assert_eq!(s.images.len(), 2);
        assert_eq!(s.images[1].kind, Kind::Overview(0));
        assert_eq!(s.images[1].tile, Some((16, 16)));
        assert_eq!(s.images[0].first_block, Some(200));
    }

    #[test]
    fn block_tables_must_match_the_image_and_lie_inside_the_file() {
        let mut two = overview((LONG, 0), (LONG, 0));
        two[6] = (324, SHORT, 2, 460 | (470 << 16));
        two[7] = (325, SHORT, 2, 10 | (10 << 16));
        let e = structure_of(tiff(&[main_ifd(), two], 500)).unwrap_err();
        assert!(
            e.ends_with("2 TileOffsets for 8x8 pixels in 1x1 tiles (expected 1)"),
            "{e}"
        );

        let e = structure_of(tiff(
            &[main_ifd(), overview((LONG, 10_000), (LONG, 10))],
            500,
        ))
        .unwrap_err();
        assert!(
            e.ends_with("block 0 (bytes 10000 to 10010) ends past the end of the file (500 bytes): truncated or damaged"),
            "{e}"
        );

        let mut none = overview((LONG, 460), (LONG, 40));
        none.truncate(6);
        let e = structure_of(tiff(&[main_ifd(), none], 500)).unwrap_err();
        assert!(
            e.ends_with("no TileOffsets: where its data is is not said"),
            "{e}"
        );

        // An empty (sparse) block is allowed.
        assert!(structure_of(tiff(&[main_ifd(), overview((LONG, 0), (LONG, 0))], 500)).is_ok());
    }

    #[test]
    fn a_huge_tag_count_costs_nothing() {
        let mut main = main_ifd();
        main[4] = (273, LONG, 1 << 30, 200);
        main[6] = (279, LONG, 1 << 30, 300);
        let f = tiff(&[main], 500);
        let r = Counting::new(io::Cursor::new(f), u64::MAX);
        let mut r = SeekBuf::new(r, 16 * 1024);
        let e = read_structure(&mut r, 500).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        // The 500 bytes once, not the 4 GiB the tags declare.
        assert_eq!(r.get_ref().bytes_read(), 500);
    }

    #[test]
    fn hostile_headers_are_refused_before_reading() {
        // A BigTIFF whose first IFD declares 2^32 entries.
        let mut f = b"II\x2b\x00\x08\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00".to_vec();
        f.extend_from_slice(&(1u64 << 32).to_le_bytes());
        f.resize(64, 0);
        let len = f.len() as u64;
        let e = read_structure(io::Cursor::new(f), len).unwrap_err();
        assert!(e.contains("declares 4294967296 entries"), "{e}");
        // A classic TIFF whose first IFD lies past the end.
        let f = b"II\x2a\x00\xff\xff\xff\x7f".to_vec();
        let e = read_structure(io::Cursor::new(f), 8).unwrap_err();
        assert!(e.contains("past the end of the file"), "{e}");
        // Not a TIFF, and an empty file.
        let e = read_structure(io::Cursor::new(b"PK\x03\x04".to_vec()), 4).unwrap_err();
        assert!(e.starts_with("not a TIFF"), "{e}");
        let e = read_structure(io::Cursor::new(Vec::new()), 0).unwrap_err();
        assert!(e.starts_with("an empty file"), "{e}");
    }
}
