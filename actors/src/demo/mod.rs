//! The `--demo` producers: orchestrator, department-head and agent actors that
//! play realistic executions into the Emitter, so events flow with no real agents.
//!
//! They are the original design's integration examples (`EventEmittingOrchestrator`,
//! `EventEmittingDepartmentHead`, `EventEmittingAgentRunner`) as actors:
//!
//! - [`Orchestrator`] plans an execution, starts one department head per
//!   involved department, and reports the run's status and metrics.
//! - `DepartmentHead` staffs specialists, checks and reviews their work, and
//!   asks for revisions until the work is approved or rejected.
//! - `Agent` is one specialist: it thinks, calls tools, drafts and revises.
//!
//! Every execution shows all 11 event types, at least one failed tool call and
//! at least one revision request: a monitor is built for the unhappy paths as
//! much as the happy one, so the demo never leaves them to chance.
//!
//! Each actor draws its random choices before it plays them back at the
//! configured pace, from a generator forked off [`DemoConfig::seed`]: the same
//! seed gives the same executions in the same order, and only the interleaving
//! of concurrent work varies with timing.

mod agent;
mod department_head;
pub mod orchestrator;

pub use orchestrator::{Orchestrator, RunExecution};

use crate::event::Complexity;
use crate::EmitterHandle;
use actix::{Actor, Addr};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Pause between two steps of an agent; the length of a whole run scales with it.
    pub pace: Duration,
    /// Executions to run on its own: `None` runs forever, one after another,
    /// now and then two at once; `Some(0)` runs none until asked with [`RunExecution`].
    pub executions: Option<u64>,
    /// The conversation every execution belongs to.
    pub conversation_id: String,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        DemoConfig {
            pace: Duration::from_millis(400),
            executions: None,
            conversation_id: "demo".into(),
            // Truncating the nanoseconds keeps the fast-moving bits, which is all a seed needs.
            seed: now.as_nanos() as u64,
        }
    }
}

/// Starts the orchestrator, which begins its own executions at once unless
/// `config.executions` is `Some(0)`.
pub fn start(emitter: EmitterHandle, config: DemoConfig) -> Addr<Orchestrator> {
    let emitter = emitter.for_conversation(config.conversation_id.clone());
    Orchestrator::new(emitter, config).start()
}

/// One execution as a demo actor sees it: where its events go, and how fast to play.
#[derive(Clone)]
pub(crate) struct Execution {
    /// The handle, already stamping the demo's conversation.
    pub emitter: EmitterHandle,
    /// The execution's ID.
    pub id: String,
    /// One beat of simulated work.
    pub pace: Duration,
}

impl Execution {
    /// Waits `beats` beats: the simulation's pacing, never a synchronisation.
    pub async fn pause(&self, beats: u32) {
        actix::clock::sleep(self.pace * beats).await;
    }
}

/// What a piece of work cost and how it went, summed up the chain into the
/// run's `metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Agent runs, a revision counting as a run of its own.
    pub agent_runs: u64,
    /// Tool calls made.
    pub tool_calls: u64,
    /// Tool calls that failed.
    pub failed_tool_calls: u64,
    /// Revision rounds asked for by reviewers.
    pub revisions: u64,
    /// Model input tokens.
    pub input_tokens: u64,
    /// Model output tokens.
    pub output_tokens: u64,
    /// What the model calls cost.
    pub cost_usd: f64,
}

impl Tally {
    /// Adds `other` into this one.
    pub fn absorb(&mut self, other: &Tally) {
        self.agent_runs += other.agent_runs;
        self.tool_calls += other.tool_calls;
        self.failed_tool_calls += other.failed_tool_calls;
        self.revisions += other.revisions;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }

    /// The tally as `metrics` keys, in camelCase like every other field.
    pub fn to_metrics(&self) -> Map<String, Value> {
        [
            ("agentRuns", json!(self.agent_runs)),
            ("toolCalls", json!(self.tool_calls)),
            ("failedToolCalls", json!(self.failed_tool_calls)),
            ("revisions", json!(self.revisions)),
            ("inputTokens", json!(self.input_tokens)),
            ("outputTokens", json!(self.output_tokens)),
            ("costUsd", json!(rounded(self.cost_usd, 6))),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

impl<'a> std::iter::Sum<&'a Tally> for Tally {
    fn sum<I: Iterator<Item = &'a Tally>>(tallies: I) -> Tally {
        let mut total = Tally::default();
        tallies.for_each(|tally| total.absorb(tally));
        total
    }
}

/// The mean of `values`, 0 when there are none.
pub(crate) fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let count = values.len();
    if count == 0 {
        return 0.0;
    }
    values.sum::<f64>() / count as f64
}

/// Milliseconds since `start`, as event durations are written.
pub(crate) fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_millis() as f64
}

/// `value` with `places` decimals, so scores and costs read like a person wrote them.
pub(crate) fn rounded(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

/// A score as JSON: `87` rather than `87.0`, the way the Emitter writes event fields.
pub(crate) fn score(value: f64) -> Value {
    if value.fract() == 0.0 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// A xorshift64* generator: no RNG crate is available, and a demo needs
/// variety and repeatability, not cryptographic quality.
#[derive(Debug, Clone)]
pub(crate) struct Prng(u64);

impl Prng {
    /// A generator for `seed`. The seed goes through splitmix64 first, so that
    /// nearby seeds start far apart and 0 (xorshift's one fixed point) never
    /// becomes the state.
    pub fn new(seed: u64) -> Prng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Prng(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    /// An independent generator for a child actor, so that its draws do not
    /// depend on when its parent makes its own.
    pub fn fork(&mut self) -> Prng {
        Prng::new(self.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits: exactly the precision of an f64 mantissa.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `[low, high)`.
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `low..=high`.
    pub fn count(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// An index below `len`, which must not be 0.
    pub fn below(&mut self, len: usize) -> usize {
        (self.next_u64() % len as u64) as usize
    }

    /// One item of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A department the orchestrator can involve.
pub(crate) struct Department {
    /// Its key in events, e.g. `story`.
    pub key: &'static str,
    /// Its display name.
    pub name: &'static str,
    /// The quality score its head accepts, 0..100.
    pub threshold: f64,
    /// Who its head can staff; a less relevant department uses only the first.
    pub specialists: [Specialist; 2],
    /// What its quality checks find wrong with a weak draft.
    pub issues: [&'static str; 3],
}

/// A specialist role within a department.
pub(crate) struct Specialist {
    /// Its key, part of the agent ID, e.g. `plot-architect`.
    pub role: &'static str,
    /// What it hands its head.
    pub deliverable: &'static str,
    /// The tools it calls, in the order of its work.
    pub tools: [&'static str; 2],
    /// Its thinking steps, in order.
    pub thoughts: [&'static str; 3],
}

/// A creative request a user might make, with how much each department matters to it.
pub(crate) struct Project {
    /// Its project ID.
    pub id: &'static str,
    /// The user's prompt.
    pub prompt: &'static str,
    /// How hard it is.
    pub complexity: Complexity,
    /// Relevance of each of [`DEPARTMENTS`], in order, before jitter.
    pub relevance: [f64; 5],
}

/// The studio: every department and its specialists.
pub(crate) static DEPARTMENTS: [Department; 5] = [
    Department {
        key: "story",
        name: "Story Department",
        threshold: 80.0,
        specialists: [
            Specialist {
                role: "plot-architect",
                deliverable: "beat sheet",
                tools: ["story_bible_search", "beat_sheet_builder"],
                thoughts: [
                    "Pulling the core conflict out of the brief and naming what each side wants",
                    "Checking the story bible so the scene respects established continuity",
                    "Laying out three beats (setup, turn, fallout) with the reveal on the turn",
                ],
            },
            Specialist {
                role: "dialogue-writer",
                deliverable: "dialogue pass",
                tools: ["character_voice_lookup", "script_formatter"],
                thoughts: [
                    "Listening for each character's voice in their earlier scenes",
                    "Drafting the exchange so the subtext carries more than the lines",
                    "Trimming speeches that explain what the staging already shows",
                ],
            },
        ],
        issues: [
            "The turn is telegraphed two beats early",
            "Stakes are stated rather than shown",
            "The scene runs long for its three beats",
        ],
    },
    Department {
        key: "character",
        name: "Character Department",
        threshold: 75.0,
        specialists: [
            Specialist {
                role: "character-designer",
                deliverable: "character sheet",
                tools: ["character_bible_lookup", "personality_matrix"],
                thoughts: [
                    "Reading what the brief needs each character to do",
                    "Mapping wants, fears and contradictions for the principal characters",
                    "Pinning down silhouettes and signature details the visual team can use",
                ],
            },
            Specialist {
                role: "backstory-writer",
                deliverable: "backstory notes",
                tools: ["timeline_search", "relationship_graph"],
                thoughts: [
                    "Tracing the shared history the conflict depends on",
                    "Finding the one past event that explains the present grudge",
                    "Keeping the backstory to what the audience can infer on screen",
                ],
            },
        ],
        issues: [
            "Motivation for the central choice is unclear",
            "The voice drifts from the established profile",
            "The arc has no visible cost",
        ],
    },
    Department {
        key: "visual",
        name: "Visual Department",
        threshold: 78.0,
        specialists: [
            Specialist {
                role: "concept-artist",
                deliverable: "concept frames",
                tools: ["image_generate", "palette_extract"],
                thoughts: [
                    "Setting the mood board: light source, weather and time of day",
                    "Choosing a palette that separates the two sides of the conflict",
                    "Composing three key frames around the emotional peak",
                ],
            },
            Specialist {
                role: "storyboard-artist",
                deliverable: "storyboard",
                tools: ["shot_planner", "image_generate"],
                thoughts: [
                    "Breaking the beats into shots and deciding where the camera lives",
                    "Blocking the actors so the power shift reads without dialogue",
                    "Checking props and eyelines for continuity across the cuts",
                ],
            },
        ],
        issues: [
            "The lighting contradicts the time of day in the script",
            "The palette clashes with the established look",
            "A key prop is missing from the establishing shot",
        ],
    },
    Department {
        key: "audio",
        name: "Audio Department",
        threshold: 72.0,
        specialists: [
            Specialist {
                role: "composer",
                deliverable: "score sketch",
                tools: ["score_sketch", "tempo_map"],
                thoughts: [
                    "Finding the emotional curve and where the music should hold back",
                    "Sketching a motif that can return later in the series",
                    "Lining up the hits with the cuts on the tempo map",
                ],
            },
            Specialist {
                role: "sound-designer",
                deliverable: "soundscape cue sheet",
                tools: ["sfx_library_search", "mix_preview"],
                thoughts: [
                    "Listing the sound sources the location implies",
                    "Layering ambience so the space feels large but not empty",
                    "Leaving room in the mix for the key line of dialogue",
                ],
            },
        ],
        issues: [
            "The score swells over the key line of dialogue",
            "The ambience loop is audible at its seam",
            "The tempo fights the rhythm of the edit",
        ],
    },
    Department {
        key: "world",
        name: "Worldbuilding Department",
        threshold: 75.0,
        specialists: [
            Specialist {
                role: "location-scout",
                deliverable: "location brief",
                tools: ["location_search", "reference_board"],
                thoughts: [
                    "Working out what the setting must do for the story",
                    "Gathering references for architecture, climate and wear",
                    "Writing the brief so every department sees the same place",
                ],
            },
            Specialist {
                role: "lore-keeper",
                deliverable: "lore notes",
                tools: ["lore_lookup", "continuity_checker"],
                thoughts: [
                    "Checking the canon for anything this request could contradict",
                    "Deciding which customs and history show up on screen",
                    "Flagging new facts so later episodes can keep them",
                ],
            },
        ],
        issues: [
            "It contradicts an established fact of the setting",
            "The geography does not match the earlier map",
            "There is too much invented lore for one scene",
        ],
    },
];

/// What users ask the studio for; the relevance order is that of [`DEPARTMENTS`].
pub(crate) static PROJECTS: [Project; 6] = [
    Project {
        id: "proj-lighthouse",
        prompt: "Create a dramatic scene where Detective Mara Quill confronts her former mentor in a storm-lashed lighthouse",
        complexity: Complexity::High,
        relevance: [1.0, 0.9, 0.75, 0.6, 0.35],
    },
    Project {
        id: "proj-greenhouse",
        prompt: "Write the cold open of a cozy sci-fi pilot about a repair crew living on an orbital greenhouse",
        complexity: Complexity::Medium,
        relevance: [0.95, 0.7, 0.8, 0.45, 0.85],
    },
    Project {
        id: "proj-fox",
        prompt: "Design the hero and sidekick of a picture book about a fox who collects lost sounds",
        complexity: Complexity::Medium,
        relevance: [0.55, 1.0, 0.85, 0.7, 0.2],
    },
    Project {
        id: "proj-night-market",
        prompt: "Storyboard the 30-second night market chase that opens episode 4",
        complexity: Complexity::Medium,
        relevance: [0.7, 0.4, 1.0, 0.65, 0.5],
    },
    Project {
        id: "proj-observatory",
        prompt: "Compose the main theme and soundscape for the haunted observatory level",
        complexity: Complexity::Low,
        relevance: [0.3, 0.35, 0.45, 1.0, 0.6],
    },
    Project {
        id: "proj-caravan",
        prompt: "Outline a three-act arc for the desert caravan saga, its rival guild leaders and their cities",
        complexity: Complexity::High,
        relevance: [1.0, 0.85, 0.5, 0.3, 0.9],
    },
];

/// The unhappy paths the orchestrator sets up for one department.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Trouble {
    /// A tool call fails once, then its retry succeeds.
    pub flaky_tool: bool,
    /// A tool keeps failing: the agent gives up and the department fails.
    pub broken_tool: bool,
    /// A first draft falls short of the threshold and goes back for revision.
    pub weak_draft: bool,
}

/// A person-readable name from an agent ID: `story-plot-architect-001` → `Plot Architect`.
pub(crate) fn display_name(agent_id: &str) -> String {
    let words: Vec<&str> = agent_id.split('-').collect();
    // Drop the department prefix and the numeric suffix the demo's IDs carry.
    let core = match words.as_slice() {
        [_, middle @ .., last]
            if last.chars().all(|c| c.is_ascii_digit()) && !middle.is_empty() =>
        {
            middle
        }
        all => all,
    };
    core.iter()
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn display_names_read_well() {
        assert_eq!(
            super::display_name("story-plot-architect-001"),
            "Plot Architect"
        );
        assert_eq!(super::display_name("editor"), "Editor");
    }

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (Prng::new(42), Prng::new(42));
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(
            first,
            (0..8).map(|_| Prng::new(43).next_u64()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn draws_stay_in_their_ranges_even_from_seed_zero() {
        let mut prng = Prng::new(0);
        for _ in 0..10_000 {
            let u = prng.unit();
            assert!((0.0..1.0).contains(&u), "{u}");
            assert!(prng.below(3) < 3);
            assert!((2..=4).contains(&prng.count(2, 4)));
            assert!((70.0..80.0).contains(&prng.between(70.0, 80.0)));
        }
    }

    #[test]
    fn draws_are_spread_out() {
        let mut prng = Prng::new(7);
        let mut seen = [0u32; 4];
        for _ in 0..4_000 {
            seen[prng.below(4)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn tallies_add_up_into_metrics() {
        let one = Tally {
            agent_runs: 1,
            tool_calls: 2,
            failed_tool_calls: 1,
            cost_usd: 0.001,
            ..Tally::default()
        };
        let total: Tally = [&one, &one].into_iter().sum();
        let metrics = total.to_metrics();
        assert_eq!(metrics["toolCalls"], 4);
        assert_eq!(metrics["failedToolCalls"], 2);
        assert_eq!(metrics["costUsd"], 0.002);
    }
}
