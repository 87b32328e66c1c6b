//! The shape of one run: how many subscribers on how many executions, how
//! the producers send, and when the run stops. Presets build these; flags
//! override any field.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// What the report calls this run ("fanout", "scaling subscribers=100 …").
    pub label: String,
    /// WebSocket connections, each subscribed before the first event.
    pub subscribers: usize,
    pub executions: usize,
    /// Concurrent HTTP connections posting events.
    pub producers: usize,
    /// Events per POST; 1 posts single objects, more posts arrays.
    pub batch: usize,
    /// Events to post in all (the run's bound).
    pub events: u64,
    /// Events per second, paced on a fixed schedule; `None` is flat-out.
    pub rate: Option<f64>,
    /// Stop posting after this long even if `events` are not all posted.
    pub duration: Option<Duration>,
    /// Flat-out only: how many events a subscription may fall behind the
    /// acknowledged ones (on average) before producers wait; 0 is no limit.
    /// Why: without it "flat-out" measures how fast a target can buffer,
    /// not how fast it delivers, and the broker would rightly close its
    /// subscribers as slow consumers (1 MiB each) while the baseline's
    /// unbounded queues just grow.
    pub window: u64,
    /// Size of each event's `thought`, so frames look like real events.
    pub payload_bytes: usize,
    /// Idle runs: how long connections sit subscribed before the target's
    /// memory is read for the per-connection figure.
    pub idle_settle: Option<Duration>,
    /// Hard bound on the whole run, connecting included.
    pub timeout: Duration,
    /// After the producers finish, the run stops waiting for deliveries
    /// once none arrived for this long: what is missing then is lost, and
    /// reported as such.
    pub drain_stall: Duration,
    /// Connections being opened at once (a bounded burst, so the target's
    /// listen backlog does not overflow into SYN retries).
    pub connect_concurrency: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            label: "custom".into(),
            subscribers: 10,
            executions: 2,
            producers: 1,
            batch: 1,
            events: 1000,
            rate: None,
            duration: None,
            window: 256,
            payload_bytes: 64,
            idle_settle: None,
            timeout: Duration::from_secs(120),
            drain_stall: Duration::from_secs(5),
            connect_concurrency: 128,
        }
    }
}

impl Shape {
    /// Subscriptions per connection: 1 while there are at least as many
    /// subscribers as executions, else enough for every execution to have
    /// a subscriber.
    pub fn per_connection(&self) -> usize {
        if self.subscribers == 0 {
            0
        } else {
            self.executions.div_ceil(self.subscribers).max(1)
        }
    }

    /// The executions subscriber `i` subscribes to: consecutive ones from
    /// `i * per_connection`, wrapping around.
    pub fn subscriptions(&self, i: usize) -> Vec<usize> {
        let k = self.per_connection();
        (0..k).map(|t| (i * k + t) % self.executions).collect()
    }

    /// Subscribers of each execution.
    pub fn subscribers_per_execution(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.executions];
        for i in 0..self.subscribers {
            for e in self.subscriptions(i) {
                counts[e] += 1;
            }
        }
        counts
    }

    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("executions", self.executions),
            ("producers", self.producers),
            ("batch", self.batch),
            ("connect-concurrency", self.connect_concurrency),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("--{name} must be at least 1"));
            }
        }
        if self.events == 0 {
            return Err("--events must be at least 1".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number of events per second".into());
        }
        Ok(())
    }

    /// One line saying what the run does.
    pub fn describe(&self) -> String {
        if let Some(settle) = self.idle_settle {
            return format!(
                "{} idle subscribers on {} executions, memory read after {:.1}s idle, then {} events to check every connection",
                self.subscribers,
                self.executions,
                settle.as_secs_f64(),
                self.events
            );
        }
        let pace = match self.rate {
            Some(rate) => format!("paced at {rate} events/s"),
            None if self.window > 0 && self.subscribers > 0 => {
                format!("flat-out (window {} events per subscription)", self.window)
            }
            None => "flat-out".into(),
        };
        let batch = if self.batch == 1 {
            "single events".into()
        } else {
            format!("batches of {}", self.batch)
        };
        format!(
            "{} subscribers on {} executions ({} subscription(s) each), {} producer(s), {batch}, {pace}, {} events",
            self.subscribers,
            self.executions,
            self.per_connection(),
            self.producers,
            self.events
        )
    }
}

/// Flags that override a preset's fields (for every step of a series).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub subscribers: Option<usize>,
    pub executions: Option<usize>,
    pub producers: Option<usize>,
    pub batch: Option<usize>,
    pub events: Option<u64>,
    /// `Some(None)`: flat-out (`--rate 0`).
    pub rate: Option<Option<f64>>,
    pub duration: Option<Duration>,
    pub window: Option<u64>,
    pub payload_bytes: Option<usize>,
    pub settle: Option<Duration>,
    pub timeout: Option<Duration>,
    pub drain_stall: Option<Duration>,
    pub connect_concurrency: Option<usize>,
}

impl Overrides {
    pub fn apply(&self, shape: &mut Shape) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut shape.subscribers, &self.subscribers);
        set(&mut shape.executions, &self.executions);
        set(&mut shape.producers, &self.producers);
        set(&mut shape.batch, &self.batch);
        set(&mut shape.events, &self.events);
        set(&mut shape.rate, &self.rate);
        set(&mut shape.window, &self.window);
        set(&mut shape.payload_bytes, &self.payload_bytes);
        set(&mut shape.timeout, &self.timeout);
        set(&mut shape.drain_stall, &self.drain_stall);
        set(&mut shape.connect_concurrency, &self.connect_concurrency);
        if self.duration.is_some() {
            shape.duration = self.duration;
        }
        if self.settle.is_some() {
            shape.idle_settle = self.settle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(subscribers: usize, executions: usize) -> Shape {
        Shape {
            subscribers,
            executions,
            ..Shape::default()
        }
    }

    #[test]
    fn more_subscribers_than_executions_spread_evenly() {
        let s = shape(1000, 10);
        assert_eq!(s.per_connection(), 1);
        assert_eq!(s.subscriptions(0), [0]);
        assert_eq!(s.subscriptions(13), [3]);
        assert!(s.subscribers_per_execution().iter().all(|&n| n == 100));
    }

    #[test]
    fn more_executions_than_subscribers_cover_every_execution() {
        let s = shape(1000, 10_000);
        assert_eq!(s.per_connection(), 10);
        assert_eq!(s.subscriptions(1), (10..20).collect::<Vec<_>>());
        assert!(s.subscribers_per_execution().iter().all(|&n| n == 1));
        // Uneven: every execution has one or two subscribers, none is missed
        // and no connection subscribes to one execution twice.
        let s = shape(100, 150);
        let counts = s.subscribers_per_execution();
        assert!(counts.iter().all(|&n| n == 1 || n == 2), "{counts:?}");
        for i in 0..100 {
            let subs = s.subscriptions(i);
            assert_eq!(subs.len(), 2);
            assert_ne!(subs[0], subs[1]);
        }
    }

    #[test]
    fn no_subscribers_no_subscriptions() {
        let s = shape(0, 100);
        assert_eq!(s.per_connection(), 0);
        assert!(s.subscribers_per_execution().iter().all(|&n| n == 0));
    }

    #[test]
    fn overrides_win_over_the_preset() {
        let mut s = shape(1000, 10);
        let o = Overrides {
            subscribers: Some(5),
            rate: Some(None),
            settle: Some(Duration::from_secs(1)),
            ..Overrides::default()
        };
        s.rate = Some(100.0);
        o.apply(&mut s);
        assert_eq!((s.subscribers, s.executions, s.rate), (5, 10, None));
        assert_eq!(s.idle_settle, Some(Duration::from_secs(1)));
    }

    #[test]
    fn nonsense_shapes_are_refused() {
        assert!(shape(10, 0).check().is_err());
        assert!(Shape {
            rate: Some(0.0),
            ..Shape::default()
        }
        .check()
        .is_err());
        assert!(Shape::default().check().is_ok());
    }
}
