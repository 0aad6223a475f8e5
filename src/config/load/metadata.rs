use super::*;

impl Checker<'_> {
    /// `[job.item_metadata]`: a geometry (or bbox) and a time are required. `None` when refused.
    pub(super) fn item_metadata(
        &mut self,
        table: &Spanned<RawItemMetadata>,
        job: &RawJob,
        tz: Tz,
        one_file: bool,
        run_timeout: Duration,
        sidecar_base: &Path,
    ) -> Option<ItemMetadata> {
        let raw = table.get_ref();
        let at_table = table.span();
        if job.item.is_none() {
            self.diag.at(
                &at_table,
                "[job.item_metadata] needs item: a collection asset has no item to create; set item = \"...\" or remove the table",
            );
        }
        if job.asset_metadata.is_none() && job.assets.is_none() {
            self.diag.at(
                &at_table,
                "[job.item_metadata] needs [job.asset_metadata]: a new item has no assets, so the asset must be created with it (expected at least type = \"<media type>\")",
            );
        }
        let geometry = match (&raw.geometry, &raw.bbox) {
            (Some(g), Some(b)) => {
                let (first, second, later) = if g.span().start < b.span().start {
                    ("geometry", "bbox", b.span())
                } else {
                    ("bbox", "geometry", g.span())
                };
                self.diag.at(
                    &later,
                    format!("{second} conflicts with {first}: expected exactly one of geometry or bbox (the polygon of the box)"),
                );
                None
            }
            (Some(g), None) => match g.get_ref() {
                RawGeometry::FromFile => self
                    .geometry_from(raw, job, &g.span())
                    .map(ItemGeometry::FromFile),
                RawGeometry::Table(t) => self
                    .value(Some(&Spanned::new(g.span(), t.clone())), |t| {
                        let geometry = serde_json::Value::Object(table_to_json(t)?);
                        let bbox = geometry_bbox(&geometry, geometry::EXPECTED_TOML)?;
                        Ok(ItemGeometry::Fixed { geometry, bbox })
                    })
                    .map(|v| v.0),
            },
            (None, Some(b)) => self
                .value(Some(b), |values| {
                    let values: Vec<f64> = values.iter().map(|v| *v.get_ref()).collect();
                    let bbox = check_bbox(&values)?;
                    Ok(ItemGeometry::Fixed {
                        geometry: bbox_polygon(bbox),
                        bbox,
                    })
                })
                .map(|v| v.0),
            (None, None) => {
                self.diag.at(
                    &at_table,
                    "[job.item_metadata] needs a geometry: expected bbox = [west, south, east, north], geometry = { type = \"Polygon\", coordinates = [...] }, or geometry = \"from_file\" (the footprint of a GeoTIFF's or GeoJSON's file)",
                );
                None
            }
        };
        if let Some(from) = &raw.geometry_from
            && !matches!(
                raw.geometry.as_ref().map(Spanned::get_ref),
                Some(RawGeometry::FromFile)
            )
        {
            self.diag.at(
                &from.span(),
                "geometry_from only applies with geometry = \"from_file\": it names the asset whose file gives the footprint; remove it, or set geometry = \"from_file\"",
            );
        }
        let time = self.item_time(raw, &at_table, tz, one_file);
        let expires = self.duration(raw.expires.as_ref(), "expires", |d| {
            check_expires(d, run_timeout, chrono::Utc::now())
        });
        let title = raw.title.as_ref().map(|t| self.title(t, tz, one_file));
        let item_json = raw
            .item_json
            .as_ref()
            .map(|p| self.item_json(p, sidecar_base, one_file));
        // `forecast:reference_datetime` as `"run"` or a template: rendered for each run like
        // `datetime`. A fixed date is an ordinary property, checked with the others.
        let reference = raw.properties.as_ref().and_then(|p| {
            let (key, value) = p
                .get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == REFERENCE_DATETIME)?;
            let text = value.get_ref().as_str()?;
            if text != "run" && !text.contains(['%', '{']) {
                return None;
            }
            let written = Spanned::new(value.span(), text.to_owned());
            let checked = self.time_value(&written, REFERENCE_DATETIME, tz, one_file);
            Some((key.get_ref().clone(), checked.map(|v| v.0)))
        });
        let skip: &[&str] = if reference.is_some() {
            &[REFERENCE_DATETIME]
        } else {
            &[]
        };
        let properties = raw.properties.as_ref().map(|p| {
            self.properties(
                p,
                skip,
                &[
                    ("datetime", "the item's time comes from datetime, or start_datetime and end_datetime, of [job.item_metadata]"),
                    ("start_datetime", "write start_datetime in [job.item_metadata] itself"),
                    ("end_datetime", "write end_datetime in [job.item_metadata] itself"),
                    ("title", "write title in [job.item_metadata] itself"),
                    ("expires", "write expires in [job.item_metadata] itself, as a duration after the run"),
                ],
                server_rules::item_property,
            )
        });
        if raw.expires.is_some() && expires.is_none() {
            return None;
        }
        let reference_datetime = match reference {
            Some((_, None)) => return None,
            Some((_, Some(v))) => Some(v),
            None => None,
        };
        Some(ItemMetadata {
            geometry: geometry?,
            time: time?,
            expires: expires.map(|v| v.0),
            title: written(title)?,
            reference_datetime,
            properties: written(properties)?.unwrap_or_default(),
            item_json: written(item_json)?,
        })
    }

    /// `geometry = "from_file"`: the member whose file gives the footprint, `geometry_from` or
    /// the first that can (a GeoTIFF or GeoJSON by its metadata type; in a bundle, a required
    /// one); a one-file job's own file. `None` when refused.
    fn geometry_from(
        &mut self,
        raw: &RawItemMetadata,
        job: &RawJob,
        at: &Span,
    ) -> Option<GeometryFrom> {
        let bundle = job.watch.is_some();
        let Some(list) = &job.assets else {
            if let Some(from) = &raw.geometry_from {
                self.diag.at(
                    &from.span(),
                    "geometry_from names one of [[job.assets]], and this job has none: it reads its own file; remove geometry_from",
                );
                return None;
            }
            if let Some(t) = job.asset_metadata.as_ref().map(|m| &m.get_ref().media_type)
                && !footprint_type(t.get_ref())
            {
                self.diag.at(
                    at,
                    format!(
                        "geometry = \"from_file\" reads the job's file, whose type {:?} has no footprint to read: expected a GeoTIFF (\"image/tiff; application=geotiff...\") or GeoJSON (\"application/geo+json\")",
                        t.get_ref()
                    ),
                );
                return None;
            }
            let id = job.asset.as_ref().map(|a| a.get_ref().clone());
            return Some(GeometryFrom {
                asset: None,
                id: id.unwrap_or_default(),
            });
        };
        let members: Vec<(&str, Option<&str>, bool)> = list
            .get_ref()
            .iter()
            .map(|a| {
                let a = a.get_ref();
                (
                    a.id.get_ref().as_str(),
                    a.metadata
                        .as_ref()
                        .map(|m| m.get_ref().media_type.get_ref().as_str()),
                    a.required.as_ref().is_none_or(|r| *r.get_ref()),
                )
            })
            .collect();
        let ids = || {
            members
                .iter()
                .map(|(id, ..)| format!("{id:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(from) = &raw.geometry_from {
            let name = from.get_ref();
            let Some(i) = members.iter().position(|(id, ..)| id == name) else {
                self.diag.at(
                    &from.span(),
                    format!(
                        "geometry_from {name:?} names no asset of the job: expected one of the ids of [[job.assets]] as written ({})",
                        ids()
                    ),
                );
                return None;
            };
            let (_, media_type, required) = members[i];
            if let Some(t) = media_type.filter(|t| !footprint_type(t)) {
                self.diag.at(
                    &from.span(),
                    format!(
                        "geometry_from {name:?}: its type {t:?} has no footprint to read; expected an asset whose type is a GeoTIFF (\"image/tiff; application=geotiff...\") or GeoJSON (\"application/geo+json\")"
                    ),
                );
                return None;
            }
            if bundle && !required {
                self.diag.at(
                    &from.span(),
                    format!(
                        "geometry_from {name:?} names an optional member (required = false): a bundle without it would have no footprint; expected a required member"
                    ),
                );
                return None;
            }
            return Some(GeometryFrom {
                asset: Some(i),
                id: name.clone(),
            });
        }
        let first = members
            .iter()
            .position(|(_, t, required)| *required && t.is_some_and(footprint_type));
        match first {
            Some(i) => Some(GeometryFrom {
                asset: Some(i),
                id: members[i].0.to_owned(),
            }),
            None => {
                self.diag.at(
                    at,
                    format!(
                        "geometry = \"from_file\" needs a {}member whose [job.assets.metadata] type is a GeoTIFF (\"image/tiff; application=geotiff...\") or GeoJSON (\"application/geo+json\"), and none of {} is; expected such a member, or geometry_from = \"<its id>\"",
                        if bundle { "required " } else { "" },
                        ids()
                    ),
                );
                None
            }
        }
    }

    /// `item_json`: a path, templated like a title, relative to `base` (the watched folder, or
    /// the job file's folder). The file itself is read by each run: it is written with the
    /// product, after the job file is checked.
    fn item_json(
        &mut self,
        raw: &Spanned<String>,
        base: &Path,
        one_file: bool,
    ) -> Option<ItemJson> {
        if raw.get_ref().trim().is_empty() {
            self.diag.at(
                &raw.span(),
                "item_json is empty: expected the path of a JSON file, e.g. \"{stem}.json\" in a watch job (relative to its dir) or \"/data/out/item-%Y-%m-%d.json\"",
            );
            return None;
        }
        let template = self.text_template(raw, "item_json", one_file)?;
        Some(ItemJson::new(template, base.to_owned()))
    }

    /// `datetime`, or `start_datetime` with `end_datetime`.
    pub(super) fn item_time(
        &mut self,
        raw: &RawItemMetadata,
        at_table: &Span,
        tz: Tz,
        one_file: bool,
    ) -> Option<ItemTime> {
        let expected = "expected either datetime, or start_datetime and end_datetime";
        match (&raw.datetime, &raw.start_datetime, &raw.end_datetime) {
            (Some(datetime), Some(other), _) | (Some(datetime), None, Some(other)) => {
                let key = if raw.start_datetime.is_some() {
                    "start_datetime"
                } else {
                    "end_datetime"
                };
                let (line, _) = self.diag.line_col(datetime.span().start);
                self.diag.at(
                    &other.span(),
                    format!("{key} conflicts with datetime (line {line}): {expected}"),
                );
                None
            }
            (Some(datetime), None, None) => self
                .item_time_value(datetime, "datetime", tz, one_file)
                .map(|v| ItemTime::Instant(v.0)),
            (None, Some(start), Some(end)) => {
                let start = self.item_time_value(start, "start_datetime", tz, one_file);
                let end_value = self.item_time_value(end, "end_datetime", tz, one_file);
                let ((start, first), (end_value, last)) = (start?, end_value?);
                // A time read from a file's name is known only then: the run sends what it reads.
                if let (Some(first), Some(last)) = (first, last)
                    && first > last
                {
                    self.diag.at(
                        &end.span(),
                        format!("end_datetime comes before start_datetime (for a run at {}: {last} < {first}): expected a range forwards in time", sample_run(tz).to_rfc3339()),
                    );
                    return None;
                }
                Some(ItemTime::Range {
                    start,
                    end: end_value,
                })
            }
            (None, Some(only), None) | (None, None, Some(only)) => {
                let (key, missing) = if raw.start_datetime.is_some() {
                    ("start_datetime", "end_datetime")
                } else {
                    ("end_datetime", "start_datetime")
                };
                self.diag
                    .at(&only.span(), format!("{key} needs {missing}: {expected}"));
                None
            }
            (None, None, None) => {
                self.diag.at(
                    at_table,
                    "[job.item_metadata] needs a time: expected datetime = \"run\" (the run time), a template such as datetime = \"%Y-%m-%dT00:00:00Z\", or start_datetime and end_datetime",
                );
                None
            }
        }
    }

    /// An item time: `"run"`, a template, or a table reading a capture of `name_pattern`; with
    /// a sample instant for ordering checks, `None` for a capture's (known only per file).
    fn item_time_value(
        &mut self,
        raw: &Spanned<RawTime>,
        key: &str,
        tz: Tz,
        one_file: bool,
    ) -> Option<(TimeValue, Option<chrono::DateTime<chrono::FixedOffset>>)> {
        match raw.get_ref() {
            RawTime::Text(text) => {
                let written = Spanned::new(raw.span(), text.clone());
                self.time_value(&written, key, tz, one_file)
                    .map(|(v, at)| (v, Some(at)))
            }
            RawTime::Capture(c) => self
                .capture_time(c, key, tz)
                .map(|c| (TimeValue::Capture(c), None)),
        }
    }

    /// `{ capture = "...", format = "...", timezone = "..." }`: the capture is one of the job's
    /// `name_pattern`, the format strftime that gives a date at least, the zone known (the
    /// job's `timezone` when not given).
    fn capture_time(&mut self, raw: &RawCaptureTime, key: &str, tz: Tz) -> Option<CaptureTime> {
        let name = raw.capture.get_ref();
        let captures = match &self.name_pattern {
            Some(p) => p.capture_names().to_vec(),
            None => {
                self.diag.at(
                    &raw.capture.span(),
                    format!("{key} reads capture {name:?}, and the job has no name_pattern: expected name_pattern = '...(?P<{name}>...)...' on the job, whose named captures are read from each file's name"),
                );
                return None;
            }
        };
        let zone = match &raw.timezone {
            Some(z) => match settings::time_zone(z.get_ref()) {
                Ok(zone) => zone,
                Err(e) => {
                    self.diag.at(&z.span(), e);
                    return None;
                }
            },
            None => tz,
        };
        if !captures.contains(name) {
            self.diag.at(
                &raw.capture.span(),
                format!(
                    "{key} reads capture {name:?}, which the job's name_pattern does not have: expected one of {}",
                    captures
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        match CaptureTime::new(name, raw.format.get_ref(), zone) {
            Ok(t) => Some(t),
            Err(e) => {
                self.diag.at(&raw.format.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    /// `"run"` or a template that renders an RFC 3339 date-time (tried with a sample run), with
    /// the sample's instant for ordering checks.
    pub(super) fn time_value(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        tz: Tz,
        one_file: bool,
    ) -> Option<(TimeValue, chrono::DateTime<chrono::FixedOffset>)> {
        let run = sample_run(tz);
        if raw.get_ref() == "run" {
            return Some((TimeValue::Run, run.fixed_offset()));
        }
        let template = self.text_template(raw, key, one_file)?;
        let sample = template.render("file.ext", &run);
        match chrono::DateTime::parse_from_rfc3339(&sample) {
            Ok(at) => Some((TimeValue::Template(template), at)),
            Err(_) => {
                self.diag.at(
                    &raw.span(),
                    format!(
                        "{key} {:?} renders {sample:?} (for a run at {}), which is not an RFC 3339 date-time: expected \"run\" (the run time) or a template such as \"%Y-%m-%dT00:00:00Z\"",
                        raw.get_ref(),
                        run.to_rfc3339()
                    ),
                );
                None
            }
        }
    }

    /// `[job.asset_metadata]`: `type` is required.
    pub(super) fn asset_metadata(
        &mut self,
        table: &Spanned<RawAssetMetadata>,
        asset: Option<&IdTemplate>,
        tz: Tz,
        one_file: bool,
    ) -> Option<AssetMetadata> {
        let raw = table.get_ref();
        // The types that fit the asset's extension, when it is written in the asset id.
        let fits = match asset.map(IdTemplate::extension) {
            Some(IdExtension::Literal(ext)) if rules::check_extension(&ext, None).is_ok() => {
                format!(
                    "; for asset {:?}, expected {}",
                    asset.map_or("", |a| a.as_str()),
                    rules::types_for(&ext)
                )
            }
            _ => String::new(),
        };
        let media_type = self.value(Some(&raw.media_type), |t| {
            let t = t.trim();
            match (rules::normalize_media_type(t), rules::media_type(t)) {
                (_, Some(known)) => Ok(known.name.to_owned()),
                (None, _) => Err(format!(
                    "invalid type {t:?}: expected a media type such as \"application/x-hdf5\" or \"image/tiff; application=geotiff\" (the server checks it fits the asset id's extension){fits}"
                )),
                (Some(_), None) => Err(format!(
                    "unknown type {t:?}: the server accepts only the media types of its table, such as \"application/x-hdf5\", \"image/tiff; application=geotiff\", \"application/zip\" or \"text/csv\"{fits}"
                )),
            }
        });
        let title = raw.title.as_ref().map(|t| self.title(t, tz, one_file));
        let mut roles = Vec::new();
        let mut roles_ok = true;
        let v09 = self.api_version == ApiVersion::V09;
        if v09 && let Some(first) = raw.roles.iter().flatten().next() {
            self.diag.at(
                &first.span(),
                "roles do not apply with api_version = \"v0.9\": its assets have no roles, and the server refuses them (400 \"Unexpected property in payload\"); remove roles",
            );
            roles_ok = false;
        }
        for role in raw.roles.iter().flatten() {
            if role.get_ref().trim().is_empty() {
                self.diag.at(
                    &role.span(),
                    "a role is empty: expected names such as \"data\", \"overview\" or \"metadata\"",
                );
                roles_ok = false;
            } else if role.get_ref().chars().count() > rules::MAX_ROLE_LEN {
                self.diag.at(
                    &role.span(),
                    format!(
                        "a role is {} characters long: the server takes roles of at most {} (it answers 400)",
                        role.get_ref().chars().count(),
                        rules::MAX_ROLE_LEN
                    ),
                );
                roles_ok = false;
            } else {
                roles.push(role.get_ref().clone());
            }
        }
        let mut from_file = AssetFromFile::default();
        let proj_epsg = match raw.proj_epsg.as_ref() {
            Some(e) => match e.get_ref() {
                FromFileOr::FromFile => {
                    from_file.proj_epsg = true;
                    None
                }
                FromFileOr::Value(v) => Some(
                    self.int_in(Some(&Spanned::new(e.span(), *v)), "proj:epsg", EPSG)
                        .map(|(v, _)| u32::try_from(v).expect("1..=999999 fits u32")),
                ),
            },
            None => None,
        };
        // `gsd` at the top: "from_file", or a number that joins the properties (where it may
        // also be written, as before, but not in both places).
        let in_properties = raw.properties.as_ref().and_then(|p| {
            p.get_ref()
                .keys()
                .find(|k| k.get_ref() == "gsd")
                .map(Spanned::span)
        });
        let mut gsd_value = None;
        let mut gsd_ok = true;
        if let Some(g) = raw.gsd.as_ref() {
            if let Some(other) = &in_properties {
                let (line, _) = self.diag.line_col(other.start);
                self.diag.at(
                    &g.span(),
                    format!("gsd is also given in properties (line {line}): expected it once"),
                );
                gsd_ok = false;
            }
            match g.get_ref() {
                FromFileOr::FromFile => from_file.gsd = true,
                FromFileOr::Value(v) => {
                    match server_rules::asset_property("gsd", &serde_json::json!(v)) {
                        Ok(()) => gsd_value = Some(serde_json::json!(v)),
                        Err((_, why)) => {
                            self.diag.at(&g.span(), why);
                            gsd_ok = false;
                        }
                    }
                }
            }
        }
        let properties = raw.properties.as_ref().map(|p| {
            self.properties(
                p,
                &[],
                &[
                    ("id", "the asset id is the job's asset"),
                    ("type", "write type in [job.asset_metadata] itself"),
                    ("title", "write title in [job.asset_metadata] itself"),
                    ("roles", "write roles in [job.asset_metadata] itself"),
                    ("proj:epsg", "write \"proj:epsg\" in [job.asset_metadata] itself"),
                    ("href", "an href makes the asset external, and an external asset cannot be uploaded to"),
                    ("file:checksum", "the server sets it from the uploads"),
                    ("checksum:multihash", "the server sets it from the uploads"),
                    ("file:size", "the server sets it from the uploads"),
                ],
                if v09 {
                    server_rules::asset_property_v09
                } else {
                    server_rules::asset_property
                },
            )
        });
        if !roles_ok || !gsd_ok {
            return None;
        }
        let mut properties = written(properties)?.unwrap_or_default();
        if let Some(gsd) = gsd_value {
            properties.insert("gsd".into(), gsd);
        }
        Some(AssetMetadata {
            media_type: media_type?.0,
            title: written(title)?,
            roles,
            proj_epsg: written(proj_epsg)?,
            properties,
            from_file,
        })
    }

    /// A title: not blank and at most 255 characters, as the server takes it (tried with a
    /// sample run and an empty file name).
    pub(super) fn title(
        &mut self,
        raw: &Spanned<String>,
        tz: Tz,
        one_file: bool,
    ) -> Option<TextTemplate> {
        let template = self.text_template(raw, "title", one_file)?;
        let run = sample_run(tz);
        let sample = template.render("", &run);
        let problem = if sample.trim().is_empty() && !template.uses_file_name() {
            "title is blank: the server refuses a blank title; expected some text, or no title"
                .to_owned()
        } else if sample.chars().count() > MAX_TITLE {
            format!(
                "title renders {} characters (for a run at {}): the server takes at most {MAX_TITLE}",
                sample.chars().count(),
                run.to_rfc3339()
            )
        } else {
            return Some(template);
        };
        self.diag.at(&raw.span(), problem);
        None
    }

    /// `[job.item_metadata.properties]` or `[job.asset_metadata.properties]`: keys that have
    /// keys of their own are refused at the table (`own_keys`), others by `check` at the key or
    /// the value.
    pub(super) fn properties(
        &mut self,
        table: &Spanned<RawProperties>,
        skip: &[&str],
        own_keys: &[(&str, &str)],
        check: server_rules::PropertyCheck,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut map = serde_json::Map::new();
        let mut ok = true;
        for (key, value) in table.get_ref() {
            let name = key.get_ref().as_str();
            if skip.contains(&name) {
                continue;
            }
            if let Some((_, why)) = own_keys.iter().find(|(k, _)| *k == name) {
                self.diag.at(
                    &table.span(),
                    format!("properties may not set {name:?}: {why}"),
                );
                ok = false;
                continue;
            }
            let json = match toml_to_json(value.get_ref()) {
                Ok(j) => j,
                Err(e) => {
                    self.diag.at(&value.span(), e);
                    ok = false;
                    continue;
                }
            };
            if let Err((blame, why)) = check(name, &json) {
                let span = match blame {
                    server_rules::Blame::Key => key.span(),
                    server_rules::Blame::Value => value.span(),
                };
                self.diag.at(&span, why);
                ok = false;
                continue;
            }
            map.insert(name.to_owned(), json);
        }
        ok.then_some(map)
    }

    /// A metadata text (title, date-time). Placeholders of the file name only apply to watch
    /// jobs.
    pub(super) fn text_template(
        &mut self,
        raw: &Spanned<String>,
        key: &str,
        one_file: bool,
    ) -> Option<TextTemplate> {
        if raw.get_ref().contains("${") {
            // Reported as an unexpanded variable.
            return None;
        }
        let parsed = match &self.name_pattern {
            Some(p) => TextTemplate::parse_with(raw.get_ref(), p.capture_names()),
            None => TextTemplate::parse(raw.get_ref()),
        };
        let template = match parsed {
            Ok(t) => t,
            Err(e) => {
                self.template_error(raw, e.for_key(key));
                return None;
            }
        };
        if one_file && self.name_pattern.is_none() && template.uses_file_name() {
            self.diag.at(
                &raw.span(),
                format!(
                    "{key} {:?} uses placeholders, which only apply to watch jobs: a schedule uploads one file",
                    raw.get_ref()
                ),
            );
            return None;
        }
        Some(template)
    }

    pub(super) fn template_error(&mut self, raw: &Spanned<String>, e: TemplateError) {
        // At the problem itself when the value is written without escapes.
        self.at_in_string(raw, e.offset(), e.to_string());
    }
}

/// `expires`, a duration after the run time: the item is created during the run, up to
/// `run_timeout` after the run time, and the server refuses an `expires` in the past; and the
/// date must stay within the year 9999, the last the server (and RFC 3339) can write.
pub(super) fn check_expires(
    d: Duration,
    run_timeout: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    if d <= run_timeout {
        return Err(format!(
            "expires = {} is not longer than run_timeout ({}): the item is created during the run, up to run_timeout after the run time, and the server refuses an expires in the past; expected more than {}",
            fmt_duration(d),
            fmt_duration(run_timeout),
            fmt_duration(run_timeout)
        ));
    }
    let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|t| t.and_utc());
    let at = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d));
    match (at, last) {
        (Some(at), Some(last)) if at <= last => Ok(()),
        _ => Err(format!(
            "expires = {} puts the item's expiry past the year 9999, which the server cannot store: expected a shorter duration",
            fmt_duration(d)
        )),
    }
}

/// The forecast property that may be rendered for each run, like `datetime`.
const REFERENCE_DATETIME: &str = "forecast:reference_datetime";

pub(super) const EPSG: std::ops::RangeInclusive<i64> = 1..=999_999;

/// The run that templates are tried with at load: a date with single-digit fields, so that
/// padding shows.
pub(super) fn sample_run(tz: Tz) -> chrono::DateTime<Tz> {
    use chrono::TimeZone;
    tz.with_ymd_and_hms(2026, 1, 5, 3, 4, 5)
        .earliest()
        .expect("no zone skips 03:04 on 5 January 2026")
}

/// A TOML value as JSON (date-times as their RFC 3339 text).
pub(super) fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} cannot be written in JSON: expected a finite number"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => {
            Value::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(table_to_json(t)?),
    })
}

pub(super) fn table_to_json(
    table: &toml::Table,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    table
        .iter()
        .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
        .collect()
}

/// Whether a media type (as written) is one whose files have a footprint to read.
fn footprint_type(media_type: &str) -> bool {
    rules::media_type(media_type.trim()).is_some_and(|t| {
        t.name.starts_with("image/tiff; application=geotiff") || t.name == "application/geo+json"
    })
}
