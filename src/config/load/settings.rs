//! The inherited settings: the table of `config/settings.rs` expanded into the layers of
//! `[defaults]` and each `[[job]]` (each valid value with where it was written), their
//! inheritance, their checks, and the job's settings they resolve to.

use super::*;
use stac_client::retry::MIN_DELAY;

/// A job's inherited settings with defaults applied.
#[derive(Debug, Clone)]
pub(in crate::config) struct Settings {
    pub(in crate::config) policy: PolicySpec,
    pub(in crate::config) upload: UploadOptions,
    pub(in crate::config) timezone: Tz,
    /// `None`: "unlimited".
    pub(in crate::config) bandwidth_limit: Option<ByteSize>,
    pub(in crate::config) bandwidth_timetable: Vec<BandwidthWindow>,
    pub(in crate::config) jitter: Duration,
    pub(in crate::config) catch_up: bool,
    pub(in crate::config) verify_public: VerifyPublic,
    pub(in crate::config) validate: Validate,
}

impl Settings {
    /// Every setting at its default.
    pub(in crate::config) fn defaults() -> Settings {
        Layer::default().resolve()
    }

    /// The limit of `bandwidth_limit` and `bandwidth_timetable`, read in the job's zone; `None`
    /// when nothing is limited.
    pub(super) fn bandwidth(&self) -> Option<BandwidthLimit> {
        bandwidth_limit(
            Some(self.bandwidth_limit),
            Some(self.bandwidth_timetable.clone()),
            self.timezone,
        )
    }
}

macro_rules! layer {
    ({} $(
        $(#[doc = $doc:literal])+
        $key:ident : $raw:ty => $val:ty {
            default: $default:expr,
            check: $check:expr,
            into: $into:expr $(,)?
        }
    )*) => {
        /// The inheritable settings of one table, each valid value with where it was written.
        #[derive(Debug, Clone, Default)]
        pub(super) struct Layer {
            $( pub(super) $key: Option<($val, Span)>, )*
        }

        impl Layer {
            /// This table's values, the `parent`'s where this one has none.
            pub(super) fn or(&self, parent: &Layer) -> Layer {
                Layer { $( $key: self.$key.clone().or_else(|| parent.$key.clone()), )* }
            }

            /// The settings, defaults where nothing was written.
            pub(super) fn resolve(&self) -> Settings {
                let mut s = Settings::placeholder();
                $({
                    let into: fn(&mut Settings, $val) = $into;
                    into(&mut s, self.$key.as_ref().map_or_else(|| $default, |v| v.0.clone()));
                })*
                s
            }
        }

        impl Checker<'_> {
            /// Checks each setting written in one table.
            pub(super) fn layer(&mut self, s: RawSettings<'_>) -> Layer {
                Layer { $( $key: {
                    let check: fn(&mut Checker<'_>, Option<&Spanned<$raw>>) -> Option<($val, Span)> = $check;
                    check(self, s.$key)
                }, )* }
            }
        }

        /// Each inherited setting's key and doc line, in the order of `config/settings.rs`.
        pub const SETTING_KEYS: &[(&str, &str)] = &[ $( (stringify!($key), concat!($($doc),+)), )* ];
    };
}

settings_table!(layer {});

impl Settings {
    /// What [`Layer::resolve`] starts from: every field is then set from the table.
    fn placeholder() -> Settings {
        Settings {
            policy: PolicySpec {
                kind: PolicyKind::Auto,
                auto_threshold: Duration::ZERO,
                retries: 0,
                retry_min_delay: Duration::ZERO,
                retry_max_delay: Duration::ZERO,
                stale_after: Duration::ZERO,
                run_timeout: Duration::ZERO,
            },
            upload: UploadOptions::default(),
            timezone: Tz::UTC,
            bandwidth_limit: None,
            bandwidth_timetable: Vec::new(),
            jitter: Duration::ZERO,
            catch_up: false,
            verify_public: VerifyPublic::Warn,
            validate: Validate::Strict,
        }
    }
}

impl Layer {
    /// The zone of schedules, templates and timetables.
    pub(super) fn timezone(&self) -> Tz {
        self.resolve().timezone
    }
}

impl Checker<'_> {
    /// An integer within `range`, as `T`.
    pub(super) fn int_as<T: TryFrom<i64>>(
        &mut self,
        raw: Option<&Spanned<Int>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<(T, Span)> {
        self.int_in(raw, key, range)
            .map(|(v, span)| (T::try_from(v).ok().expect("the range fits the type"), span))
    }

    /// `[server] bandwidth_limit` and `bandwidth_timetable`, read in the defaults' zone. `None`
    /// when refused (the error is recorded), `Some(None)` when nothing is limited.
    pub(super) fn server_bandwidth(
        &mut self,
        raw: &RawServer,
        tz: Tz,
    ) -> Option<Option<BandwidthLimit>> {
        let limit = self.value(raw.bandwidth_limit.as_ref(), |r| rate(r, "bandwidth_limit"));
        let windows = self.timetable(raw.bandwidth_timetable.as_ref());
        let refused = (raw.bandwidth_limit.is_some() && limit.is_none())
            || (raw.bandwidth_timetable.is_some() && windows.is_none());
        if refused {
            return None;
        }
        Some(bandwidth_limit(
            limit.map(|v| v.0),
            windows.map(|v| v.0),
            tz,
        ))
    }

    /// `bandwidth_timetable = [{ from = "07:00", to = "19:00", limit = "5MB/s" }, ...]`.
    pub(super) fn timetable(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawWindow>>>>,
    ) -> Option<(Vec<BandwidthWindow>, Span)> {
        let raw = raw?;
        let mut windows = Vec::with_capacity(raw.get_ref().len());
        let mut ok = true;
        for w in raw.get_ref() {
            let w = w.get_ref();
            let from = self.value(Some(&w.from), |t| time_of_day(t, "from"));
            let to = self.value(Some(&w.to), |t| time_of_day(t, "to"));
            let limit = self.value(Some(&w.limit), |r| rate(r, "limit"));
            match (from, to, limit) {
                (Some(from), Some(to), Some(limit)) => windows.push(BandwidthWindow {
                    from: from.0,
                    to: to.0,
                    rate: limit.0,
                }),
                _ => ok = false,
            }
        }
        ok.then(|| (windows, raw.span()))
    }

    /// retry_min_delay <= retry_max_delay, checked where either is set, against the inherited
    /// value of the other.
    pub(super) fn check_delay_order(&mut self, own: &Layer, inherited: &Layer) {
        let merged = own.or(inherited).resolve().policy;
        if merged.retry_min_delay <= merged.retry_max_delay {
            return;
        }
        let Some(span) = own
            .retry_min_delay
            .as_ref()
            .or(own.retry_max_delay.as_ref())
            .map(|v| v.1.clone())
        else {
            return;
        };
        self.diag.at(
            &span,
            format!(
                "retry_min_delay ({}) is longer than retry_max_delay ({}): expected retry_min_delay <= retry_max_delay",
                fmt_duration(merged.retry_min_delay),
                fmt_duration(merged.retry_max_delay)
            ),
        );
    }
}

/// `compress`: the names of [`CompressMode`].
pub(super) fn compress_mode(name: &str) -> Result<CompressMode, String> {
    parse_enum::<CompressMode>(name, "compress").map_err(|_| {
        format!(
            "invalid compress {name:?}: expected \"gzip\", \"br\", \"none\" or \"auto\" (gzip for files over 10 MB whose media type is not already compressed)"
        )
    })
}

/// A rate per second: `"20MB/s"`, a number of bytes per second, or `"unlimited"` (`None`).
pub(super) fn rate(raw: &Size, key: &str) -> Result<Option<ByteSize>, String> {
    let expected = "expected a rate such as \"20MB/s\", or \"unlimited\"";
    let rate = match raw {
        Size::Text(t) if t.trim() == "unlimited" => return Ok(None),
        Size::Text(t) => t
            .parse::<ByteSize>()
            .map_err(|_| format!("invalid {key} {t:?}: {expected}"))?,
        Size::Bytes(n) => u64::try_from(*n)
            .map(ByteSize)
            .map_err(|_| format!("{key} = {n} is negative: {expected}"))?,
    };
    if rate.get() == 0 {
        return Err(format!("{key} of 0 would stop every upload: {expected}"));
    }
    Ok(Some(rate))
}

/// `"07:00"` or `"07:00:30"`, local time.
pub(super) fn time_of_day(text: &str, key: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| chrono::NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .map_err(|_| {
            format!(
                "invalid {key} {text:?}: expected a time of day such as \"07:00\" (00:00 to 23:59)"
            )
        })
}

/// A limit from its two keys; `None` when nothing is limited at any time.
pub(super) fn bandwidth_limit(
    rate: Option<Option<ByteSize>>,
    windows: Option<Vec<BandwidthWindow>>,
    timezone: Tz,
) -> Option<BandwidthLimit> {
    let rate = rate.flatten();
    let windows = windows.unwrap_or_default();
    if rate.is_none() && windows.iter().all(|w| w.rate.is_none()) {
        return None;
    }
    Some(BandwidthLimit {
        rate,
        windows,
        timezone,
    })
}

pub(super) fn part_size(raw: &Size) -> Result<ByteSize, String> {
    let size = match raw {
        Size::Bytes(n) => u64::try_from(*n).map(ByteSize).map_err(|_| {
            format!("part_size = {n} is negative: expected a size such as \"16MiB\"")
        })?,
        Size::Text(t) => t
            .parse::<ByteSize>()
            .map_err(|e| format!("invalid part_size: {e}"))?,
    };
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size.get()) {
        return Err(format!(
            "part_size = {size} is out of range: expected {} to {} (the API's limits for one part)",
            ByteSize(MIN_PART_SIZE),
            ByteSize(MAX_PART_SIZE)
        ));
    }
    Ok(size)
}

/// `retry_min_delay`: at least [`MIN_DELAY`], below which retries hammer a server that is already
/// in trouble.
fn min_retry_delay(d: Duration) -> Result<(), String> {
    if d < MIN_DELAY {
        Err(format!(
            "retry_min_delay = {} is too short: expected at least {}, so that retries do not hammer a struggling server",
            fmt_duration(d),
            fmt_duration(MIN_DELAY)
        ))
    } else {
        Ok(())
    }
}

/// `timezone`: an IANA zone name.
pub(super) fn time_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_owned()).to_string())
}

/// `validate`: what a file that is not what its media type says does to a run.
pub(super) fn validate_mode(text: &str) -> Result<Validate, String> {
    match text {
        "strict" => Ok(Validate::Strict),
        "warn" => Ok(Validate::Warn),
        "off" => Ok(Validate::Off),
        other => Err(format!(
            "invalid validate {other:?}: expected \"strict\" (a file that is not what its media type says is refused before anything is created), \"warn\" (logged, counted, published) or \"off\""
        )),
    }
}
