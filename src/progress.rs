//! A terminal progress bar for one-shot uploads; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use stac_upload::{UploadEvent, UploadObserver};

/// Shows the digest pass, then the send pass: bytes, rate, ETA.
pub(crate) struct Bar {
    bar: ProgressBar,
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Bar {
    /// A bar drawn on stderr, or nothing when stderr is not a terminal.
    pub(crate) fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        Self { bar }
    }

    /// Starts over (a second attempt).
    pub(crate) fn reset(&self) {
        self.bar.reset();
    }

    /// Removes the bar from the terminal.
    pub(crate) fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl UploadObserver for Bar {
    fn on_event(&self, event: &UploadEvent<'_>) {
        match event {
            UploadEvent::Planned { size, .. } => {
                self.bar.set_length(*size);
                self.bar.set_position(0);
                self.bar.set_message("hashing");
            }
            UploadEvent::Hashed { bytes } | UploadEvent::Sent { bytes } => self.bar.inc(*bytes),
            UploadEvent::Digested { .. } => {
                self.bar.reset_elapsed();
                self.bar.reset_eta();
                self.bar.set_position(0);
                self.bar.set_message("sending");
            }
            UploadEvent::Unsent { bytes } => self
                .bar
                .set_position(self.bar.position().saturating_sub(*bytes)),
            _ => {}
        }
    }
}
