//! The settings a job inherits from `[defaults]` (and that `stac-uploadd upload` takes as
//! flags), each declared once, here.
//!
//! One entry per key: its doc line, the type as written (`Size`, `Int`, `DurationText`,
//! `String`, `bool`: see `raw.rs`), the checked type, its default, its check (with its bounds and
//! messages, located at the value), and where the checked value lands in the job's
//! [`Settings`](super::load). From this list are generated: the fields of `[defaults]` and
//! `[[job]]` (`raw.rs`), the inheritance (`Layer::or`), the checks (`Checker::layer`), the job's
//! policy and upload options (`Layer::resolve`), and [`SETTING_KEYS`](super::SETTING_KEYS),
//! which a test holds `config/jobs.example.toml` and `docs/configuration.md` to.
//!
//! To add a setting: add an entry here (and a line to `config/jobs.example.toml` and a row to
//! the table of `docs/configuration.md`; a test says if either is missing). To give it to `stac-uploadd upload` as well, add its flag to
//! `SettingArgs` in `src/cli.rs`.
//!
//! The checks are expressions read where the table is expanded (`load/settings.rs`): `c` is the
//! `Checker`, `raw` the value as written (if it is), `s` the `Settings` being filled.

/// Calls `$callback! { { $input } <entries> }`: the one list of inherited settings.
macro_rules! settings_table {
    ($callback:ident { $($input:tt)* }) => {
        $callback! {
            { $($input)* }

            /// Target part size; a larger file gets larger parts (at most 100 parts).
            part_size: Size => ByteSize {
                default: UploadOptions::default().part_size,
                check: |c, raw| c.value(raw, part_size),
                into: |s, v| s.upload.part_size = v,
            }
            /// Parts sent at once, 1 to 32.
            parallel: Int => usize {
                default: UploadOptions::default().parallel,
                check: |c, raw| c.int_as(raw, "parallel", 1..=32),
                into: |s, v| s.upload.parallel = v,
            }
            /// Retries of one part (and of create/complete/abort) after a transient failure, 0 to 10.
            part_retries: Int => u32 {
                default: UploadOptions::default().part_retries,
                check: |c, raw| c.int_as(raw, "part_retries", 0..=10),
                into: |s, v| s.upload.part_retries = v,
            }
            /// What a failed run does: "retry", "cancel" (wait for the next run) or "auto".
            policy: String => PolicyKind {
                default: PolicyKind::Auto,
                check: |c, raw| c.value(raw, |p| parse_enum(p, "policy")),
                into: |s, v| s.policy.kind = v,
            }
            /// Under "auto", schedules whose runs are at least this far apart retry.
            auto_threshold: DurationText => Duration {
                default: Duration::from_secs(3600),
                check: |c, raw| c.duration(raw, "auto_threshold", |_| Ok(())),
                into: |s, v| s.policy.auto_threshold = v,
            }
            /// Retries of a failed run under the retry policy, 0 to 10.
            retries: Int => u32 {
                default: 3,
                check: |c, raw| c.int_as(raw, "retries", 0..=10),
                into: |s, v| s.policy.retries = v,
            }
            /// The first wait before a retry (at least 100ms); it doubles each retry, with jitter.
            retry_min_delay: DurationText => Duration {
                default: Duration::from_secs(1),
                check: |c, raw| c.duration(raw, "retry_min_delay", min_retry_delay),
                into: |s, v| s.policy.retry_min_delay = v,
            }
            /// The longest wait before a retry.
            retry_max_delay: DurationText => Duration {
                default: Duration::from_secs(600),
                check: |c, raw| c.duration(raw, "retry_max_delay", |_| Ok(())),
                into: |s, v| s.policy.retry_max_delay = v,
            }
            /// Someone else's upload in progress on the asset is aborted once this old.
            stale_after: DurationText => Duration {
                default: Duration::from_secs(3600),
                check: |c, raw| c.positive_duration(raw, "stale_after"),
                into: |s, v| s.policy.stale_after = v,
            }
            /// A run still going after this long is aborted.
            run_timeout: DurationText => Duration {
                default: Duration::from_secs(7200),
                check: |c, raw| c.positive_duration(raw, "run_timeout"),
                into: |s, v| s.policy.run_timeout = v,
            }
            /// The zone of cron schedules, time fields in ids and metadata, and bandwidth timetables.
            timezone: String => Tz {
                default: Tz::UTC,
                check: |c, raw| c.value(raw, |t| time_zone(t)),
                into: |s, v| s.timezone = v,
            }
            /// Compress before sending: "none", "gzip", "br" or "auto".
            compress: String => CompressMode {
                default: UploadOptions::default().compress,
                check: |c, raw| c.value(raw, |t| compress_mode(t)),
                into: |s, v| s.upload.compress = v,
            }
            /// Skip the upload when the asset already holds the file (its checksum is the file's).
            skip_unchanged: bool => bool {
                default: UploadOptions::default().skip_unchanged,
                check: |_, raw| raw.map(|v| (*v.get_ref(), v.span())),
                into: |s, v| s.upload.skip_unchanged = v,
            }
            /// This job's rate limit, e.g. "20MB/s", or "unlimited".
            bandwidth_limit: Size => Option<ByteSize> {
                default: None,
                check: |c, raw| c.value(raw, |r| rate(r, "bandwidth_limit")),
                into: |s, v| s.bandwidth_limit = v,
            }
            /// Limits by time of day: [{ from = "07:00", to = "19:00", limit = "5MB/s" }, ...].
            bandwidth_timetable: Vec<Spanned<RawWindow>> => Vec<BandwidthWindow> {
                default: Vec::new(),
                check: |c, raw| c.timetable(raw),
                into: |s, v| s.bandwidth_timetable = v,
            }
            /// A random delay of up to this much before each scheduled run (schedule and every jobs).
            jitter: DurationText => Duration {
                default: Duration::ZERO,
                check: |c, raw| c.duration(raw, "jitter", |_| Ok(())),
                into: |s, v| s.jitter = v,
            }
            /// Run once at start-up if a scheduled run was missed while the daemon was down.
            catch_up: bool => bool {
                default: false,
                check: |_, raw| raw.map(|v| (*v.get_ref(), v.span())),
                into: |s, v| s.catch_up = v,
            }
            /// After an upload, HEAD the asset's public href: "warn" (log, count), "fail" (the run fails) or "off".
            verify_public: String => VerifyPublic {
                default: VerifyPublic::Warn,
                check: |c, raw| c.value(raw, |v| parse_enum(v, "verify_public")),
                into: |s, v| s.verify_public = v,
            }
            /// Check each file against its asset's media type before anything is created: "strict" (refuse), "warn" (log, count, publish) or "off".
            validate: String => Validate {
                default: Validate::Strict,
                check: |c, raw| c.value(raw, |v| validate_mode(v)),
                into: |s, v| s.validate = v,
            }
        }
    };
}
