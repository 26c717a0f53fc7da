//! The status as a page for a person with a browser: the pool's figures,
//! one row per worker, reloading itself.

use std::fmt::Write;
use std::time::Duration;

use drover_supervisor::PoolStatus;
use html_escape::encode_text as text;

/// `status` as a whole HTML page that reloads every `refresh`.
pub(crate) fn render(status: &PoolStatus, refresh: Duration) -> String {
    let mut page = String::with_capacity(4096);
    let name = text(&status.name);
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>{name}: drover pool</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: .25em .75em; border-bottom: 1px solid #ddd; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ready {{ color: #070; }} .busy {{ color: #a60; }} .stopping, .starting {{ color: #666; }}
</style></head><body>
<h1>{name}</h1>
<p id="pool">{phase}{failure}: {target} workers wanted, {active} active, {idle} idle;
queue {queued} (longest {max_queued}, full {queue_full} times);
{accepted} requests accepted, {slow} slow; {restarts} restarts; up {uptime}.</p>
<table id="workers"><thead><tr><th>slot</th><th>pid</th><th>state</th><th>memory</th>
<th>served</th><th>in flight</th><th>up</th><th>doing</th><th>slot's last exit</th></tr></thead><tbody>
"#,
        refresh = refresh.as_secs().max(1),
        phase = text(&status.phase),
        failure = status
            .failure
            .as_deref()
            .map(|f| format!(" ({})", text(f)))
            .unwrap_or_default(),
        target = status.target_workers,
        active = status.active,
        idle = status.idle,
        queued = status.queued,
        max_queued = status.max_queued,
        queue_full = status.queue_full,
        accepted = status.accepted,
        slow = status.slow,
        restarts = status.restarts,
        uptime = human_duration(Duration::from_secs_f64(status.uptime_secs)),
    );
    let now_ms = status.started_at_ms + (status.uptime_secs * 1000.0) as u64;
    for w in &status.workers {
        let state = w.state.to_string();
        let _ = writeln!(
            page,
            r#"<tr class="worker" data-pid="{pid}"><td class="n">{index}</td><td class="n">{pid}</td><td class="{state}">{state}</td><td class="n">{rss}</td><td class="n">{served}</td><td class="n">{in_flight}</td><td>{up}</td><td>{doing}</td><td>{exit}</td></tr>"#,
            pid = w.pid,
            index = w.index,
            rss = w
                .rss
                .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
                .unwrap_or_else(|| "-".to_owned()),
            served = w.served,
            in_flight = w.in_flight,
            up = human_duration(Duration::from_millis(
                now_ms.saturating_sub(w.started_at_ms)
            )),
            doing = text(w.status.as_deref().unwrap_or("")),
            exit = text(w.last_exit.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</tbody></table>\n</body></html>\n");
    page
}

/// `d` as a person reads it: `3d 4h`, `2h 5m`, `4m 12s`, `12s` (what the
/// HTML view and `drover-ctl status` show).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_reads_them() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(252)), "4m 12s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human_duration(Duration::from_secs(273600)), "3d 4h");
    }
}
