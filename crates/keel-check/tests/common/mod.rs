//! Generators of KV histories that are linearizable by construction, shared by the generated
//! tests and the benchmark.

use std::collections::HashMap;

use keel_check::{KvInput, KvOutput, Operation, RETURN_UNKNOWN};

/// A small deterministic generator (SplitMix64), so a failure replays from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// A reference KV store, written independently of `KvInput::apply` so that the tests do not
/// check the model against itself.
#[derive(Default)]
pub struct ReferenceKv {
    map: HashMap<String, String>,
}

impl ReferenceKv {
    pub fn execute(&mut self, input: &KvInput) -> KvOutput {
        match input {
            KvInput::Get { key } => KvOutput::Value(self.map.get(key).cloned()),
            KvInput::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvOutput::Ok
            }
            KvInput::Append { key, value } => {
                self.map.entry(key.clone()).or_default().push_str(value);
                KvOutput::Ok
            }
            KvInput::Delete { key } => {
                self.map.remove(key);
                KvOutput::Ok
            }
            KvInput::Cas { key, expected, new } => {
                let swapped = self.map.get(key) == expected.as_ref();
                if swapped {
                    self.map.insert(key.clone(), new.clone());
                }
                KvOutput::Swapped(swapped)
            }
        }
    }
}

/// What a generated history looks like.
pub struct Workload<'a> {
    pub op_count: usize,
    pub client_count: usize,
    pub keys: &'a [&'a str],
    /// Written values are drawn from this many (`v0`, `v1`, ...), so that reads are ambiguous;
    /// `None`: every write has a value of its own, as most real tests do.
    pub distinct_values: Option<u64>,
    /// About this many operations in a thousand lose their reply: half after taking effect,
    /// half before (they never take effect).
    pub unknown_per_mille: u64,
}

/// A random request: mostly gets and puts, some appends, deletes and compare-and-swaps.
/// `serial` numbers the request within the history.
fn random_input(rng: &mut Rng, workload: &Workload, serial: usize) -> KvInput {
    let key = workload.keys[rng.below(workload.keys.len() as u64) as usize];
    let value = match workload.distinct_values {
        Some(count) => format!("v{}", rng.below(count)),
        None => format!("w{serial}"),
    };
    match rng.below(20) {
        0..=8 => KvInput::get(key),
        9..=14 => KvInput::put(key, value),
        15..=16 => KvInput::append(key, value),
        17 => KvInput::delete(key),
        _ => {
            let expected = match workload.distinct_values {
                Some(count) => Some(format!("v{}", rng.below(count))),
                // The latest value is a fair guess when every write is unique.
                None => Some(format!(
                    "w{}",
                    serial.saturating_sub(1 + rng.below(3) as usize)
                )),
            };
            KvInput::cas(key, expected.as_deref(), format!("c{serial}"))
        }
    }
}

/// What a simulated client is doing.
enum Client {
    Idle,
    /// Waiting for the request to take effect.
    Called {
        input: KvInput,
        call: u64,
    },
    /// The request took effect; waiting for the reply to arrive.
    Applied {
        input: KvInput,
        call: u64,
        output: KvOutput,
    },
}

/// A linearizable history: the clients' requests run against one atomic store, each called,
/// taking effect at a later instant and returning later still, the steps of all clients
/// randomly interleaved.
pub fn concurrent_history(seed: u64, workload: &Workload) -> Vec<Operation<KvInput, KvOutput>> {
    let Workload {
        op_count,
        client_count,
        unknown_per_mille,
        ..
    } = *workload;
    let mut rng = Rng::new(seed);
    let mut store = ReferenceKv::default();
    let mut clients: Vec<Client> = (0..client_count).map(|_| Client::Idle).collect();
    let mut history = Vec::with_capacity(op_count);
    let mut issued = 0;
    let mut now: u64 = 0;
    while history.len() < op_count {
        now += 1 + rng.below(3);
        let client_id = rng.below(client_count as u64);
        let client = &mut clients[client_id as usize];
        let lost = rng.chance(unknown_per_mille / 2);
        *client = match std::mem::replace(client, Client::Idle) {
            Client::Idle if issued < op_count => {
                issued += 1;
                let input = random_input(&mut rng, workload, issued);
                Client::Called { input, call: now }
            }
            Client::Idle => Client::Idle,
            Client::Called { input, call } if lost => {
                history.push(unknown(client_id, input, call));
                Client::Idle
            }
            Client::Called { input, call } => {
                let output = store.execute(&input);
                Client::Applied {
                    input,
                    call,
                    output,
                }
            }
            Client::Applied { input, call, .. } if lost => {
                history.push(unknown(client_id, input, call));
                Client::Idle
            }
            Client::Applied {
                input,
                call,
                output,
            } => {
                history.push(Operation {
                    client_id,
                    input,
                    call,
                    output,
                    return_time: now,
                });
                Client::Idle
            }
        };
    }
    history
}

fn unknown(client_id: u64, input: KvInput, call: u64) -> Operation<KvInput, KvOutput> {
    Operation {
        client_id,
        input,
        call,
        output: KvOutput::Unknown,
        return_time: RETURN_UNKNOWN,
    }
}
