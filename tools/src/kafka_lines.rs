//! Generated lines as Kafka messages (`alertflow gen metrics --kafka BROKERS --topic T`, the
//! `kafka` scenario of `alertflow bench`, the Kafka criterion bench): one message per line,
//! keyed by tenant/host/name so that a series always lands in the same partition (its points
//! keep their order, as in the file); lz4 batches.

use std::io::{self, Write};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A `Write` that sends every complete line to a topic.
pub struct KafkaLines {
    producer: BaseProducer,
    topic: String,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
    key: Vec<u8>,
    sent: u64,
}

impl KafkaLines {
    /// A producer for `brokers` sending to `topic` (which must exist, or the broker must
    /// create topics on first use).
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "50")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("compression.type", "lz4")
            .create()?;
        Ok(KafkaLines { producer, topic: topic.to_string(), partial: Vec::new(), key: Vec::new(), sent: 0 })
    }

    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        self.key.clear();
        for field in [&b"\"tenant\":\""[..], b"\"host\":\"", b"\"name\":\""] {
            if let Some(v) = string_field(line, field) {
                self.key.extend_from_slice(v);
                self.key.push(b'/');
            }
        }
        let mut rec = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(line).key(&self.key[..]);
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    self.producer.poll(Duration::from_millis(10));
                    rec = r;
                }
                Err((e, _)) => return Err(io::Error::other(format!("cannot send to `{}`: {e}", self.topic))),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(4096) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Sends the last line and waits for every delivery; returns how many messages were sent.
    pub fn finish(mut self) -> io::Result<u64> {
        let rest = std::mem::take(&mut self.partial);
        self.send(&rest)?;
        self.producer.flush(Duration::from_secs(120)).map_err(|e| io::Error::other(format!("not every message was delivered: {e}")))?;
        Ok(self.sent)
    }
}

/// The value of a string field `"key":"value"` written without spaces (the generator's form).
fn string_field<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let at = line.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    Some(&line[at..at + len])
}

impl Write for KafkaLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.send(&rest[..nl])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..nl]);
                self.send(&line)?;
                line.clear();
                self.partial = line;
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_series() {
        let l = br#"{"ts":1,"tenant":"t0","host":"h00001","name":"cpu","value":1}"#;
        assert_eq!(string_field(l, b"\"host\":\""), Some(&b"h00001"[..]));
        assert_eq!(string_field(l, b"\"zone\":\""), None);
    }
}
