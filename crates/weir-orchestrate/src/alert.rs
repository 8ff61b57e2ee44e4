//! Alerts: a webhook (a JSON POST whose `text` Slack shows as it is) or an email (SMTP), on a
//! task's failure or retry, a run's success, or a run still going past its deadline.
//!
//! Delivery never blocks a pipeline: each alert is sent by a task of its own, retried with
//! backoff when the endpoint is down or answers an error, and its outcome (sent, or given up
//! with the reason) is recorded in the metadata store. A run waits for its alerts only once
//! all its tasks are done, and not for long.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value as J, json};
use weir_store::AlertDelivery;

use crate::template::Renderer;
use weir_core::error_chain;

/// When an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEvent {
    /// A task failed for good (after its retries).
    Failure,
    /// A task failed an attempt and will be retried.
    Retry,
    /// A run succeeded.
    Success,
    /// A run was still going when its deadline passed.
    Deadline,
}

impl AlertEvent {
    pub const ALL: &[(&str, AlertEvent)] = &[
        ("failure", AlertEvent::Failure),
        ("retry", AlertEvent::Retry),
        ("success", AlertEvent::Success),
        ("deadline", AlertEvent::Deadline),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, e)| *e == self).map(|(n, _)| *n).unwrap_or("failure")
    }
}

/// One alert of a pipeline: the events it fires on and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub on: Vec<AlertEvent>,
    pub channel: Channel,
}

/// Where an alert goes. URLs and addresses are templates (`{{ env_var('SLACK_HOOK') }}`), so
/// secrets stay out of the files.
#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    Webhook { url: String, headers: Vec<(String, String)> },
    Email { smtp: String, from: String, to: Vec<String> },
}

/// What happened, for the alert's text and payload.
#[derive(Debug, Clone)]
pub struct Happening {
    pub event: AlertEvent,
    pub task: Option<String>,
    pub message: String,
}

/// Attempts per alert, and the wait before the second (doubling after).
const TRIES: u32 = 4;
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// How long one delivery attempt may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// Sends `what` to every alert that fires on it, each from a task of its own.
pub(crate) fn fire(alerts: &[Alert], what: &Happening, renderer: &Arc<Renderer>, pending: &mut Vec<tokio::task::JoinHandle<()>>) {
    for alert in alerts.iter().filter(|a| a.on.contains(&what.event)) {
        let (alert, what, renderer) = (alert.clone(), what.clone(), renderer.clone());
        pending.push(tokio::spawn(async move { deliver(&alert, &what, &renderer).await }));
    }
}

async fn deliver(alert: &Alert, what: &Happening, renderer: &Renderer) {
    let ctx = &renderer.ctx;
    let text = match &what.task {
        Some(t) => format!("[weir] {} {}: task {t} {}: {}", ctx.pipeline, ctx.run_id, verb(what.event), what.message),
        None => format!("[weir] {} {} {}: {}", ctx.pipeline, ctx.run_id, verb(what.event), what.message),
    };
    let payload = json!({
        "text": text,
        "event": what.event.name(),
        "pipeline": ctx.pipeline,
        "run_id": ctx.run_id,
        "task": what.task,
        "message": what.message,
        "data_interval_start": ctx.interval.start,
        "data_interval_end": ctx.interval.end,
    });
    let task = what.task.as_deref().unwrap_or("");
    let (channel, result) = match &alert.channel {
        Channel::Webhook { url, headers } => match render_all(renderer, task, url, headers) {
            Ok((url, headers)) => (format!("webhook {}", shown_url(&url)), retry(|| post(&url, &headers, &payload)).await),
            Err(e) => ("webhook".to_string(), (0, Err(e))),
        },
        Channel::Email { smtp, from, to } => {
            let rendered = (|| -> Result<_, String> {
                let to = to.iter().map(|t| renderer.render(t, task)).collect::<Result<Vec<_>, _>>()?;
                Ok((renderer.render(smtp, task)?, renderer.render(from, task)?, to))
            })();
            match rendered {
                Ok((smtp, from, to)) => {
                    let subject = clip_line(&text, 150);
                    (format!("email {}", to.join(", ")), retry(|| mail(&smtp, &from, &to, &subject, &text)).await)
                }
                Err(e) => ("email".to_string(), (0, Err(e))),
            }
        }
    };
    let (attempts, outcome) = result;
    let record = AlertDelivery {
        pipeline: ctx.pipeline.clone(),
        run_id: ctx.run_id.clone(),
        task: what.task.clone(),
        event: what.event.name().into(),
        channel,
        status: if outcome.is_ok() { "sent" } else { "failed" }.into(),
        attempts,
        message: outcome.err(),
        delivered_at: Utc::now(),
    };
    // Nothing to tell anyone if even the store is gone; the run's own record says the rest.
    let _ = renderer.store.record_alert(&record);
}

fn verb(e: AlertEvent) -> &'static str {
    match e {
        AlertEvent::Failure => "failed",
        AlertEvent::Retry => "is up for retry",
        AlertEvent::Success => "succeeded",
        AlertEvent::Deadline => "missed its deadline",
    }
}

type Rendered = (String, Vec<(String, String)>);

fn render_all(r: &Renderer, task: &str, url: &str, headers: &[(String, String)]) -> Result<Rendered, String> {
    let url = r.render(url, task)?;
    let headers = headers.iter().map(|(k, v)| Ok((k.clone(), r.render(v, task)?))).collect::<Result<Vec<_>, String>>()?;
    Ok((url, headers))
}

/// Tries `send` up to [`TRIES`] times with doubling waits; how many tries it took, and the
/// last error if none worked.
async fn retry<F, Fut>(mut send: F) -> (u32, Result<(), String>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut wait = FIRST_WAIT;
    let mut last = String::new();
    for n in 1..=TRIES {
        match tokio::time::timeout(ATTEMPT_LIMIT, send()).await {
            Ok(Ok(())) => return (n, Ok(())),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("no answer within {}s", ATTEMPT_LIMIT.as_secs()),
        }
        if n < TRIES {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    (TRIES, Err(last))
}

async fn post(url: &str, headers: &[(String, String)], payload: &J) -> Result<(), String> {
    let client = reqwest::Client::new();
    let mut req = client.post(url).json(payload);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| format!("{}: {}", shown_url(url), error_chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = resp.text().await.unwrap_or_default();
        Err(format!("{} answered {}: {}", shown_url(url), status.as_u16(), clip_line(&body, 200)))
    }
}

async fn mail(smtp: &str, from: &str, to: &[String], subject: &str, body: &str) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let mut builder = Message::builder().from(from.parse().map_err(|e| format!("from '{from}': {e}"))?).subject(subject);
    for t in to {
        builder = builder.to(t.parse().map_err(|e| format!("to '{t}': {e}"))?);
    }
    let message = builder.body(body.to_string()).map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)
        .map_err(|e| format!("'{}' is not an SMTP URL: {e}", shown_url(smtp)))?
        .timeout(Some(ATTEMPT_LIMIT))
        .build();
    transport.send(message).await.map(drop).map_err(|e| format!("{}: {}", shown_url(smtp), error_chain(&e)))
}

/// A URL without its credentials or path (webhook paths are secrets: Slack's carry the key).
fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(invalid URL)".into() };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    let more = if rest.len() > host.len() && rest.contains('/') { "/…" } else { "" };
    format!("{scheme}://{host}{more}")
}

fn clip_line(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(shown_url("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(shown_url("smtp://user:pw@mail.example.com:587?tls=required"), "smtp://mail.example.com:587");
        assert_eq!(shown_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
    }
}
