//! The thermal model of one freezer: pure, seeded, no I/O and no clock of its own.
//!
//! The cabinet leaks heat toward the room; a compressor with a thermostat and hysteresis pulls
//! it back below the setpoint. Door openings let warm, moist air in (temperature and humidity
//! spike, then the coil condenses the moisture away); every few hours a defrost heater warms the
//! coil toward 0 °C and the compressor pulls the cabinet back down; now and then a fault strikes
//! (the compressor fails and the cabinet warms steadily, the sensor sticks or turns noisy) and is
//! repaired hours later. Above the alarm threshold for long enough, the freezer is in alarm.
//!
//! Time is simulated seconds, advanced by the caller ([`Freezer::advance_to`]) on a fixed grid
//! of [`STEP_S`]: the trajectory depends only on the seed and the device's index, never on how
//! often it is sampled, so the same seed gives the same series for any fleet size, interval or
//! sink. `--speed` is the caller's business (it maps wall time to simulated time).

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// The setpoint every freezer regulates around by default (°C), a common commercial setting.
pub const SETPOINT_C: f64 = -18.0;
/// The lowest and highest setpoint a freezer accepts (°C).
pub const SETPOINT_RANGE: std::ops::RangeInclusive<f64> = -40.0..=-5.0;
/// The model's time step (simulated seconds): every random draw happens on this grid.
pub const STEP_S: f64 = 5.0;
/// The room the freezer stands in (°C).
const AMBIENT_C: f64 = 22.0;
/// How much faster heat comes in while the door is open.
const DOOR_LEAK_FACTOR: f64 = 8.0;
/// After a defrost the cabinet is warm on purpose: the alarm's clock waits this long (s), as
/// freezer controllers' "alarm delay after defrost" does.
const ALARM_DELAY_AFTER_DEFROST_S: f64 = 60.0 * 60.0;
/// How long a door opened by a command stays open (s).
const COMMANDED_DOOR_S: f64 = 30.0;
/// A defrost ends at this coil temperature (°C) or after [`DEFROST_MAX_S`].
const DEFROST_END_C: f64 = -1.0;
const DEFROST_MAX_S: f64 = 30.0 * 60.0;
/// Mean simulated time between random faults of one freezer (s): about a month.
const MEAN_TIME_BETWEEN_FAULTS_S: f64 = 30.0 * 86_400.0;

/// When the alarm sounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlarmRule {
    /// The measured temperature above which the clock starts (°C).
    pub above: f64,
    /// How long it must stay above (simulated seconds).
    pub after_s: f64,
}

impl Default for AlarmRule {
    fn default() -> Self {
        AlarmRule {
            above: -10.0,
            after_s: 15.0 * 60.0,
        }
    }
}

/// What the freezer is doing, as its `state` field reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Cooling,
    Idle,
    Defrost,
    DoorOpen,
    Fault,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Cooling => "cooling",
            State::Idle => "idle",
            State::Defrost => "defrost",
            State::DoorOpen => "door_open",
            State::Fault => "fault",
        }
    }
}

/// A fault, random or commanded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The compressor no longer runs: the cabinet warms toward the room.
    Compressor,
    /// The sensor reports this value whatever the temperature.
    SensorStuck(f64),
    /// The sensor adds a few degrees of noise.
    SensorNoise,
}

/// Something done to a freezer from outside: the console, a command or the shadow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Door,
    Defrost,
    Fail,
    Fix,
    Setpoint(f64),
}

impl Action {
    /// `door`, `defrost`, `fail`, `fix`, `setpoint` (with its value).
    pub fn parse(verb: &str, value: Option<f64>) -> Result<Action, String> {
        match (verb, value) {
            ("door", _) => Ok(Action::Door),
            ("defrost", _) => Ok(Action::Defrost),
            ("fail", _) => Ok(Action::Fail),
            ("fix", _) => Ok(Action::Fix),
            ("setpoint", Some(v)) => Ok(Action::Setpoint(v)),
            ("setpoint", None) => Err("setpoint needs a value in °C, e.g. -25".into()),
            (other, _) => Err(format!(
                "unknown command '{other}': use door, defrost, fail, fix or setpoint"
            )),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Action::Door => "door opened".into(),
            Action::Defrost => "defrost started".into(),
            Action::Fail => "compressor failed".into(),
            Action::Fix => "repaired".into(),
            Action::Setpoint(v) => format!("setpoint {v} °C"),
        }
    }
}

/// One sample of the freezer, rounded as a real controller reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// °C as measured (one decimal).
    pub temperature: f64,
    /// % relative humidity (one decimal).
    pub humidity: f64,
    pub state: State,
    pub setpoint: f64,
    pub door_open: bool,
    pub alarm: bool,
}

/// The parts of the state the Device Shadow reports: a change of any of them is worth a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reported {
    pub state: State,
    pub setpoint: f64,
    pub door_open: bool,
    pub alarm: bool,
}

/// One freezer. See the module documentation.
#[derive(Debug, Clone)]
pub struct Freezer {
    rng: Xoshiro256PlusPlus,
    /// Simulated seconds since the start; the grid steps taken so far.
    clock: f64,
    steps: u64,
    setpoint: f64,
    hysteresis: f64,
    /// Heat leak toward the room (1/s) and the compressor's pull (°C/s).
    leak: f64,
    cool: f64,
    /// The defrost heater (°C/s).
    heater: f64,
    temperature: f64,
    compressor_on: bool,
    humidity_base: f64,
    humidity: f64,
    /// Door openings per simulated second, and when the open door closes.
    door_rate: f64,
    door_until: Option<f64>,
    defrost_every: f64,
    next_defrost: f64,
    defrost_since: Option<f64>,
    /// When the last defrost ended (the alarm waits after it).
    defrost_ended: Option<f64>,
    fault: Option<Fault>,
    /// When a random fault is repaired (a commanded one waits for `fix`).
    repair_at: Option<f64>,
    /// The sensor's noise at this step.
    noise: f64,
    alarm_rule: AlarmRule,
    above_since: Option<f64>,
}

impl Freezer {
    /// The freezer for device number `index` (0-based) of a run seeded with `seed`.
    pub fn new(seed: u64, index: u64, alarm_rule: AlarmRule) -> Self {
        // Mix the index into the seed so neighbouring devices get unrelated streams.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let setpoint = round1(SETPOINT_C + rng.random_range(-1.5..1.5));
        let hysteresis = rng.random_range(0.8..1.6);
        let humidity_base = rng.random_range(55.0..72.0);
        let defrost_every = rng.random_range(4.0..8.0) * 3600.0;
        Freezer {
            clock: 0.0,
            steps: 0,
            temperature: setpoint + rng.random_range(-hysteresis..hysteresis),
            compressor_on: rng.random_bool(0.5),
            leak: rng.random_range(3.0e-5..5.0e-5),
            cool: rng.random_range(0.008..0.011),
            heater: rng.random_range(0.015..0.025),
            setpoint,
            hysteresis,
            humidity_base,
            humidity: humidity_base,
            // Half an opening to three openings an hour.
            door_rate: rng.random_range(0.5..3.0) / 3600.0,
            door_until: None,
            // The fleet's defrosts are spread over their period.
            next_defrost: rng.random_range(0.0..1.0) * defrost_every,
            defrost_every,
            defrost_since: None,
            defrost_ended: None,
            fault: None,
            repair_at: None,
            noise: 0.0,
            alarm_rule,
            above_since: None,
            rng,
        }
    }

    /// A `[[group]]`'s model parameters: its setpoint (the temperature starts near it) and door
    /// openings per hour.
    pub fn tune(&mut self, setpoint: Option<f64>, door_rate_per_hour: Option<f64>) {
        if let Some(sp) = setpoint {
            self.temperature += sp - self.setpoint;
            self.setpoint = sp;
        }
        if let Some(r) = door_rate_per_hour {
            self.door_rate = r / 3600.0;
        }
    }

    /// Simulated seconds since the start.
    #[cfg(test)]
    pub fn clock(&self) -> f64 {
        self.clock
    }

    /// Runs the model forward to simulated time `t` (never backward).
    pub fn advance_to(&mut self, t: f64) {
        while (self.steps + 1) as f64 * STEP_S <= t {
            self.step();
            self.steps += 1;
        }
        self.clock = self.clock.max(t);
    }

    /// Applies an action now; an error says why it was refused.
    pub fn apply(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Door => self.open_door(COMMANDED_DOOR_S),
            Action::Defrost => self.defrost_since = Some(self.clock),
            Action::Fail => {
                self.fault = Some(Fault::Compressor);
                self.repair_at = None;
            }
            Action::Fix => {
                self.fault = None;
                self.repair_at = None;
            }
            Action::Setpoint(v) if SETPOINT_RANGE.contains(&v) => self.setpoint = v,
            Action::Setpoint(v) => {
                return Err(format!(
                    "setpoint {v} °C is outside {} to {} °C",
                    SETPOINT_RANGE.start(),
                    SETPOINT_RANGE.end()
                ));
            }
        }
        Ok(())
    }

    /// What the freezer measures and reports now.
    pub fn reading(&self) -> Reading {
        let r = self.reported();
        Reading {
            temperature: round1(self.measured()),
            humidity: round1(self.humidity),
            state: r.state,
            setpoint: r.setpoint,
            door_open: r.door_open,
            alarm: r.alarm,
        }
    }

    /// The state the Device Shadow reports.
    pub fn reported(&self) -> Reported {
        let door_open = self.door_until.is_some();
        let state = if self.fault.is_some() {
            State::Fault
        } else if self.defrost_since.is_some() {
            State::Defrost
        } else if door_open {
            State::DoorOpen
        } else if self.compressor_on {
            State::Cooling
        } else {
            State::Idle
        };
        Reported {
            state,
            setpoint: self.setpoint,
            door_open,
            alarm: self.alarm(),
        }
    }

    fn alarm(&self) -> bool {
        self.above_since
            .is_some_and(|since| self.clock - since >= self.alarm_rule.after_s)
    }

    fn measured(&self) -> f64 {
        match self.fault {
            Some(Fault::SensorStuck(v)) => v,
            _ => self.temperature + self.noise,
        }
    }

    fn open_door(&mut self, for_s: f64) {
        let until = self.clock + for_s;
        self.door_until = Some(self.door_until.map_or(until, |u| u.max(until)));
        // Warm, moist room air: the humidity jumps at once.
        self.humidity += self.rng.random_range(8.0..15.0);
    }

    /// One grid step of [`STEP_S`] simulated seconds.
    fn step(&mut self) {
        let h = STEP_S;
        let now = (self.steps + 1) as f64 * STEP_S;
        self.clock = now;
        // Every draw happens every step, whatever the state, so the stream never shifts.
        let door_draw = self.rng.random_range(0.0..1.0);
        let door_for = self.rng.random_range(10.0..60.0);
        let fault_draw = self.rng.random_range(0.0..1.0);
        let fault_kind = self.rng.random_range(0..3u8);
        let repair_after = self.rng.random_range(2.0..8.0) * 3600.0;
        let noise = self.rng.random_range(-0.05..0.05);
        let wide_noise = self.rng.random_range(-2.0..2.0);

        if self.door_until.is_some_and(|u| now >= u) {
            self.door_until = None;
        }
        if self.door_until.is_none() && door_draw < self.door_rate * h {
            self.open_door(door_for);
        }
        if self.defrost_since.is_none() && now >= self.next_defrost {
            self.defrost_since = Some(now);
        }
        if let Some(since) = self.defrost_since
            && (self.temperature >= DEFROST_END_C || now - since >= DEFROST_MAX_S)
        {
            self.defrost_since = None;
            self.defrost_ended = Some(now);
            self.next_defrost = now + self.defrost_every;
        }
        if self.repair_at.is_some_and(|at| now >= at) {
            self.fault = None;
            self.repair_at = None;
        }
        if self.fault.is_none() && fault_draw < h / MEAN_TIME_BETWEEN_FAULTS_S {
            self.fault = Some(match fault_kind {
                0 => Fault::Compressor,
                1 => Fault::SensorStuck(round1(self.temperature)),
                _ => Fault::SensorNoise,
            });
            self.repair_at = Some(now + repair_after);
        }

        // The thermostat, on the true cabinet temperature; the heater keeps it off in a defrost.
        let defrosting = self.defrost_since.is_some();
        if defrosting {
            self.compressor_on = false;
        } else if self.temperature > self.setpoint + self.hysteresis {
            self.compressor_on = true;
        } else if self.temperature < self.setpoint - self.hysteresis {
            self.compressor_on = false;
        }
        let running = self.compressor_on && self.fault != Some(Fault::Compressor);
        let leak = self.leak
            * if self.door_until.is_some() {
                DOOR_LEAK_FACTOR
            } else {
                1.0
            };
        let mut dt = leak * (AMBIENT_C - self.temperature);
        if running {
            dt -= self.cool;
        }
        if defrosting {
            dt += self.heater;
        }
        self.temperature += dt * h;

        // Humidity: the open door pulls it toward the room's; the running coil condenses it
        // back toward the cabinet's own level (faster while the compressor runs).
        let (target, tau) = if self.door_until.is_some() {
            (90.0, 60.0)
        } else if running {
            (self.humidity_base, 300.0)
        } else {
            (self.humidity_base, 900.0)
        };
        self.humidity += (target - self.humidity) * (h / tau).min(1.0);
        self.humidity = self.humidity.clamp(0.0, 100.0);

        self.noise = if self.fault == Some(Fault::SensorNoise) {
            wide_noise
        } else {
            noise
        };
        let recovering = self.defrost_since.is_some()
            || self
                .defrost_ended
                .is_some_and(|end| now - end < ALARM_DELAY_AFTER_DEFROST_S);
        if self.measured() > self.alarm_rule.above && !recovering {
            self.above_since.get_or_insert(now);
        } else {
            self.above_since = None;
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: f64 = 3600.0;

    fn freezer(seed: u64, index: u64) -> Freezer {
        Freezer::new(seed, index, AlarmRule::default())
    }

    /// Samples every `every` simulated seconds for `until`.
    fn series(f: &mut Freezer, every: f64, until: f64) -> Vec<Reading> {
        let mut out = vec![];
        let mut t = f.clock();
        let until = t + until;
        while t < until {
            t += every;
            f.advance_to(t);
            out.push(f.reading());
        }
        out
    }

    #[test]
    fn same_seed_same_series_whatever_the_sampling() {
        let a = series(&mut freezer(7, 3), 60.0, 24.0 * HOUR);
        let b = series(&mut freezer(7, 3), 60.0, 24.0 * HOUR);
        assert_eq!(a, b);
        assert_ne!(a, series(&mut freezer(7, 4), 60.0, 24.0 * HOUR));
        // Sampled every 10 s instead: every sixth reading is the same as the minutely one.
        let fine = series(&mut freezer(7, 3), 10.0, 24.0 * HOUR);
        let coarse: Vec<_> = fine.iter().skip(5).step_by(6).copied().collect();
        assert_eq!(coarse, a);
    }

    #[test]
    fn pinned_values_of_one_seed() {
        // Pinned from the model as it is: a change to its physics or its draws changes these,
        // and then on purpose (the seed's readings in old reports change with it).
        let mut f = freezer(42, 0);
        f.advance_to(HOUR);
        let r = f.reading();
        assert_eq!((r.temperature, r.humidity), (-16.8, 72.1));
        let mut g = freezer(42, 9);
        g.advance_to(6.0 * HOUR);
        let r = g.reading();
        assert_eq!((r.temperature, r.humidity), (-15.0, 75.3));
    }

    #[test]
    fn compressor_cycles_around_the_setpoint() {
        for index in 0..10 {
            let mut f = freezer(1, index);
            let readings = series(&mut f, 30.0, 48.0 * HOUR);
            let normal: Vec<_> = readings
                .iter()
                .filter(|r| matches!(r.state, State::Cooling | State::Idle))
                .collect();
            let sp = readings[0].setpoint;
            let within = normal
                .iter()
                .filter(|r| (r.temperature - sp).abs() <= 2.5)
                .count();
            // Most of the time within reach of the setpoint; pull-downs after doors and
            // defrosts make the rest.
            assert!(
                within * 10 >= normal.len() * 8,
                "device {index}: {within} of {}",
                normal.len()
            );
            let switches = normal.windows(2).filter(|w| w[0].state != w[1].state).count();
            assert!(
                switches >= 40,
                "device {index}: the compressor switched {switches} times in 2 days"
            );
        }
    }

    #[test]
    fn a_defrost_warms_toward_zero_and_recovers() {
        let mut f = freezer(3, 1);
        f.advance_to(60.0);
        f.apply(Action::Defrost).unwrap();
        let during = series(&mut f, 30.0, 40.0 * 60.0);
        let peak = during.iter().map(|r| r.temperature).fold(f64::MIN, f64::max);
        assert!((-3.0..=1.0).contains(&peak), "defrost peaked at {peak}");
        assert!(during.iter().any(|r| r.state == State::Defrost));
        // An hour later it is back around its setpoint.
        let t = f.clock() + HOUR;
        f.advance_to(t);
        let r = f.reading();
        assert!((r.temperature - r.setpoint).abs() <= 2.5, "{r:?}");
        assert_ne!(r.state, State::Defrost);
    }

    #[test]
    fn defrosts_come_every_few_hours_on_their_own() {
        let readings = series(&mut freezer(5, 2), 60.0, 24.0 * HOUR);
        let starts = readings
            .windows(2)
            .filter(|w| w[0].state != State::Defrost && w[1].state == State::Defrost)
            .count();
        assert!((2..=7).contains(&starts), "{starts} defrosts in a day");
    }

    #[test]
    fn a_compressor_failure_crosses_the_alarm_threshold() {
        let mut f = freezer(9, 0);
        f.advance_to(60.0);
        f.apply(Action::Fail).unwrap();
        let readings = series(&mut f, 60.0, 12.0 * HOUR);
        let first_above = readings
            .iter()
            .position(|r| r.temperature > -10.0)
            .expect("warms past -10 °C");
        let first_alarm = readings.iter().position(|r| r.alarm).expect("alarms");
        // The alarm waits its 15 minutes above the threshold (longer if a defrost came between).
        assert!(first_alarm - first_above >= 15, "{first_above} {first_alarm}");
        assert!(
            readings[first_alarm - 15..first_alarm]
                .iter()
                .all(|r| r.temperature > -10.0),
            "the alarm came without 15 minutes above -10 °C"
        );
        assert!(readings.iter().all(|r| r.state == State::Fault));
        // Repaired, it cools down and the alarm clears.
        f.apply(Action::Fix).unwrap();
        let after = series(&mut f, 60.0, 12.0 * HOUR);
        let last = after.last().unwrap();
        assert!(
            !last.alarm && (last.temperature - last.setpoint).abs() <= 2.5,
            "{last:?}"
        );
    }

    #[test]
    fn a_door_opening_spikes_humidity_and_temperature() {
        let mut f = freezer(11, 4);
        f.advance_to(HOUR);
        let before = f.reading();
        f.apply(Action::Door).unwrap();
        f.advance_to(f.clock() + 25.0);
        let open = f.reading();
        assert!(open.door_open && open.state == State::DoorOpen);
        assert!(open.humidity >= before.humidity + 8.0, "{before:?} -> {open:?}");
        assert!(open.temperature > before.temperature, "{before:?} -> {open:?}");
        // Half an hour later the door is shut and the coil has taken the moisture back.
        f.advance_to(f.clock() + 1800.0);
        let later = f.reading();
        assert!(!later.door_open);
        assert!(later.humidity < open.humidity - 5.0, "{open:?} -> {later:?}");
    }

    #[test]
    fn a_new_setpoint_is_followed_physically() {
        let mut f = freezer(2, 2);
        f.advance_to(HOUR);
        f.apply(Action::Setpoint(-25.0)).unwrap();
        assert_eq!(f.reading().setpoint, -25.0);
        f.advance_to(f.clock() + 10.0 * 60.0);
        let soon = f.reading();
        assert!(soon.temperature > -24.0, "not at once: {soon:?}");
        f.advance_to(f.clock() + 2.0 * HOUR);
        assert!((f.reading().temperature + 25.0).abs() <= 2.5, "{:?}", f.reading());
        assert!(f.apply(Action::Setpoint(10.0)).is_err());
        assert_eq!(f.reading().setpoint, -25.0);
    }

    #[test]
    fn readings_stay_physical_for_a_month() {
        for index in 0..5 {
            let mut f = freezer(1, index);
            for r in series(&mut f, 300.0, 30.0 * 86_400.0) {
                assert!((-45.0..=AMBIENT_C + 3.0).contains(&r.temperature), "{r:?}");
                assert!((0.0..=100.0).contains(&r.humidity), "{r:?}");
            }
        }
    }
}
