//! The dashboard's chart of the last 24 hours: sends, token refreshes and failures per hour,
//! counted from the events and drawn as server-side SVG (no script, no chart library).
//! The template draws the bars from the numbers here; nothing in it comes from a user.

use mailgate_core::Timestamp;
use mailgate_core::event::{Event, EventKind};

/// Hours shown, oldest first.
pub const HOURS: usize = 24;
/// Drawing size in SVG units; the stylesheet scales it to the page.
pub const WIDTH: i64 = 480;
pub const HEIGHT: i64 = 120;

/// What an event counts as in the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    Sends,
    Refreshes,
    Failures,
}

impl Series {
    fn of(kind: EventKind) -> Option<Series> {
        match kind {
            EventKind::MessageSent => Some(Series::Sends),
            EventKind::TokenRefreshed => Some(Series::Refreshes),
            EventKind::MessageFailed
            | EventKind::TokenRefreshFailed
            | EventKind::AuthorizationFailed
            | EventKind::TestFailed
            | EventKind::InboundFailed
            | EventKind::AccountReauthRequired => Some(Series::Failures),
            _ => None,
        }
    }
}

/// One bar of the chart, in SVG units.
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
    /// CSS class: `sends`, `refreshes` or `failures`.
    pub class: &'static str,
    /// The tooltip: the hour and the count.
    pub label: String,
}

pub struct Chart {
    pub sends: usize,
    pub refreshes: usize,
    pub failures: usize,
    pub bars: Vec<Bar>,
    pub width: i64,
    pub height: i64,
}

impl Chart {
    /// Counts the events of the 24 hours before `now` per hour and series.
    pub fn last_24h(events: &[Event], now: Timestamp) -> Chart {
        let start = now.0 - (HOURS as i64) * 3600;
        let mut counts = [[0usize; 3]; HOURS];
        for e in events {
            let Some(series) = Series::of(e.kind) else {
                continue;
            };
            if e.at.0 < start || e.at.0 > now.0 {
                continue;
            }
            let hour = (((e.at.0 - start) / 3600) as usize).min(HOURS - 1);
            counts[hour][series as usize] += 1;
        }
        let max = counts
            .iter()
            .flat_map(|h| h.iter())
            .copied()
            .max()
            .unwrap_or(0)
            .max(1) as i64;
        let slot = WIDTH / HOURS as i64;
        let bar_width = slot / 3;
        let mut bars = Vec::new();
        for (hour, per_series) in counts.iter().enumerate() {
            for (i, (count, class)) in per_series
                .iter()
                .zip(["sends", "refreshes", "failures"])
                .enumerate()
            {
                if *count == 0 {
                    continue;
                }
                let height = ((*count as i64) * (HEIGHT - 10) / max).max(2);
                let hours_ago = HOURS - hour;
                bars.push(Bar {
                    x: hour as i64 * slot + i as i64 * bar_width,
                    y: HEIGHT - height,
                    width: bar_width,
                    height,
                    class,
                    label: format!("{count} {class}, {hours_ago} h ago"),
                });
            }
        }
        let total = |s: Series| counts.iter().map(|h| h[s as usize]).sum();
        Chart {
            sends: total(Series::Sends),
            refreshes: total(Series::Refreshes),
            failures: total(Series::Failures),
            bars,
            width: WIDTH,
            height: HEIGHT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, at: i64) -> Event {
        Event {
            id: 0,
            at: Timestamp(at),
            kind,
            app_id: None,
            account_id: None,
            message: String::new(),
            actor: None,
            source: None,
        }
    }

    #[test]
    fn counts_the_last_24_hours_per_series_and_hour() {
        let now = Timestamp(1_790_000_000);
        let events = [
            event(EventKind::MessageSent, now.0 - 60),
            event(EventKind::MessageSent, now.0 - 120),
            event(EventKind::TokenRefreshed, now.0 - 5 * 3600),
            event(EventKind::MessageFailed, now.0 - 23 * 3600),
            event(EventKind::TestFailed, now.0 - 10),
            // Outside the window, or not charted.
            event(EventKind::MessageSent, now.0 - 25 * 3600),
            event(EventKind::AccountCreated, now.0 - 10),
        ];
        let chart = Chart::last_24h(&events, now);
        assert_eq!((chart.sends, chart.refreshes, chart.failures), (2, 1, 2));
        // One bar per (hour, series) with events: sends and failures in the last hour,
        // a refresh 5 h ago, a failure 23 h ago.
        assert_eq!(chart.bars.len(), 4);
        let tallest = chart.bars.iter().map(|b| b.height).max().unwrap();
        let sends = chart.bars.iter().find(|b| b.class == "sends").unwrap();
        assert_eq!(sends.height, tallest, "the busiest bar is full height");
        assert!(
            chart
                .bars
                .iter()
                .all(|b| b.x + b.width <= WIDTH && b.y >= 0)
        );
    }
}
