//! Guest stdout and stderr go to the host log, one event per line, tagged with the component.
//!
//! The guest's writes are logged in the call itself. wasmtime's default adapter for an async
//! writer hands every write to a task of its own and makes the guest wait for that task: a
//! trip through the scheduler for every line.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Clone)]
pub struct GuestLog {
    component: Arc<str>,
    stream: &'static str,
}

impl GuestLog {
    pub fn stdout(component: Arc<str>) -> Self {
        Self {
            component,
            stream: "stdout",
        }
    }

    pub fn stderr(component: Arc<str>) -> Self {
        Self {
            component,
            stream: "stderr",
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

impl GuestLog {
    fn writer(&self) -> LineWriter {
        LineWriter {
            log: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// Longest line kept before it is logged anyway, so a guest cannot grow our memory.
const MAX_LINE: usize = 8 * 1024;

/// How much a guest may write in one call (`check-write`): with [`MAX_LINE`], what a writer
/// holds stays under twice that, and a longer line is logged in parts.
const WRITE_PERMIT: usize = MAX_LINE;

struct LineWriter {
    log: GuestLog,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.is_empty() {
            return;
        }
        if self.log.stream == "stderr" {
            tracing::warn!(component = %self.log.component, stream = self.log.stream, "{text}");
        } else {
            tracing::info!(component = %self.log.component, stream = self.log.stream, "{text}");
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.flush_lines();
    }

    fn flush_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.pending.len() > MAX_LINE {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest);
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_logged_when_it_ends_and_a_long_one_in_parts() {
        let mut writer = GuestLog::stdout("chat".into()).writer();
        assert_eq!(writer.check_write().unwrap(), WRITE_PERMIT);
        OutputStream::write(&mut writer, Bytes::from_static(b"first par")).unwrap();
        assert_eq!(writer.pending, b"first par");
        OutputStream::write(&mut writer, Bytes::from_static(b"t\nsecond")).unwrap();
        assert_eq!(writer.pending, b"second");
        let permit = writer.check_write().unwrap();
        OutputStream::write(&mut writer, Bytes::from(vec![b'x'; permit])).unwrap();
        assert!(
            writer.pending.is_empty(),
            "a line past MAX_LINE is logged at once"
        );
    }
}
