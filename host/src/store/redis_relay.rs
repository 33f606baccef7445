//! [`Relay`]: topics through Redis pub/sub, so that every subscriber on every host
//! that shares the server hears each message.
//!
//! A host publishes with `PUBLISH` on its command connection (in order with its
//! writes: a guest that sets a key and then announces it has its set done first), and
//! listens on one pub/sub connection of its own to the channel of every topic that
//! someone in the process hears ([`Topics::heard`]), subscribing and unsubscribing as
//! that changes. A message the relay hears goes to the process's subscribers as a
//! message from another worker would: all hosts hear one topic's messages in the
//! server's order, the publisher's own subscribers included.
//!
//! When the connection is lost (checked with a PING once a second), the relay
//! connects again after 100 ms, doubling up to 2 s, and subscribes again to every
//! channel it should hear. Redis keeps nothing for a subscriber that is away: messages
//! published meanwhile do not reach this host's subscribers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::PubSubSink;
use ::redis::{Client, Msg, Value};
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::redis_health::{CHECK_EVERY, FIRST_RETRY, Health, MAX_RETRY};
use super::redis_layout::Layout;
use super::topics::NO_WORKER;
use super::{Namespace, Topics};

/// The pub/sub side of a Redis store: one namespace's channels, for one process.
pub struct Relay {
    /// The server.
    pub client: Client,
    /// Its URL, for logs.
    pub url: String,
    /// `--store-timeout`: what connecting, subscribing and a PING may take.
    pub timeout: Duration,
    /// Whose topics.
    pub namespace: Namespace,
    /// Their channels.
    pub layout: Layout,
    /// The process's subscribers.
    pub topics: Arc<Topics>,
    /// Rung when the topics heard in the process change.
    pub nudge: Arc<Notify>,
    /// Where the connection's state is shown.
    pub health: Arc<Health>,
}

impl Relay {
    /// Listens for ever, connecting again whenever the connection is lost.
    pub async fn run(self) {
        let mut delay = FIRST_RETRY;
        loop {
            let mut connected = false;
            let why = self.session(&mut connected).await;
            self.health.messages.down(&self.url, &why);
            if connected {
                delay = FIRST_RETRY;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    /// One connection's life: answers why it ended.
    async fn session(&self, connected: &mut bool) -> String {
        let pubsub = match tokio::time::timeout(self.timeout, self.client.get_async_pubsub()).await
        {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "no answer within --store-timeout".into(),
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut heard = HashSet::new();
        if let Err(why) = self.follow(&mut sink, &mut heard).await {
            return why;
        }
        *connected = true;
        self.health.messages.up(&self.url);
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.deliver(&message),
                    None => return "the connection closed".into(),
                },
                () = self.nudge.notified() => {
                    if let Err(why) = self.follow(&mut sink, &mut heard).await {
                        return why;
                    }
                }
                _ = check.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return e.to_string(),
                        Err(_) => return "no answer to a PING within --store-timeout".into(),
                    }
                }
            }
        }
    }

    /// Subscribes to the channels of the topics the process hears and `heard` lacks,
    /// and unsubscribes from those it no longer hears.
    async fn follow(
        &self,
        sink: &mut PubSubSink,
        heard: &mut HashSet<String>,
    ) -> Result<(), String> {
        let wanted: HashSet<String> = self
            .topics
            .heard(&self.namespace)
            .iter()
            .map(|topic| self.layout.channel(topic))
            .collect();
        let new: Vec<&String> = wanted.difference(heard).collect();
        if !new.is_empty() {
            self.bounded(sink.subscribe(new)).await?;
        }
        let old: Vec<&String> = heard.difference(&wanted).collect();
        if !old.is_empty() {
            self.bounded(sink.unsubscribe(old)).await?;
        }
        *heard = wanted;
        Ok(())
    }

    /// `request`, within `--store-timeout`.
    async fn bounded(
        &self,
        request: impl Future<Output = ::redis::RedisResult<()>>,
    ) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within --store-timeout".into()),
        }
    }

    /// Hands a message to the process's subscribers of its topic.
    fn deliver(&self, message: &Msg) {
        if let Some(topic) = self.layout.topic_of(message.get_channel_name()) {
            self.topics.publish(
                &self.namespace,
                topic,
                message.get_payload_bytes(),
                NO_WORKER,
            );
        }
    }
}
