//! Device groups (`[[group]]` tables in the `--config` file): a mixed fleet, each group with its
//! own devices, ids, schedule, topic, QoS, fields or template, and freezer model parameters.
//! Flags are the shortcut for a fleet of one group. Each group is reported on its own and in
//! total.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use rumqttc::QoS;

use super::layer::{GroupSpec, ModelSpec, Sourced};
use super::{Schedule, settings, validate};
use crate::freezer::Fields;
use crate::freezer::template::Template;
use crate::input;

/// One group, checked.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Fleet positions (0-based) of its devices.
    pub range: Range<usize>,
    /// With a shared `--cert`: its devices are `<id_prefix>1..N`.
    pub id_prefix: Option<String>,
    /// Its own schedule, else the fleet's.
    pub schedule: Option<Schedule>,
    /// Its topic pattern, else the fleet's `--topic`.
    pub topic: Option<String>,
    pub qos: Option<QoS>,
    pub fields: Option<Fields>,
    pub template: Option<Arc<Template>>,
    pub model: ModelSpec,
}

impl Group {
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// The topic of device `id` in this group, its placeholders filled.
    pub fn topic_for(&self, id: &str) -> Option<String> {
        self.topic
            .as_ref()
            .map(|t| t.replace("{id}", id).replace("{group}", &self.name))
    }
}

/// Checks the `[[group]]` tables of `file` (their relative paths are from its folder).
pub fn check(specs: Vec<GroupSpec>, file: &str, dir: Option<&Path>) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    let mut next = 0usize;
    for (i, spec) in specs.into_iter().enumerate() {
        let name = spec.name.clone().unwrap_or_else(|| format!("group{}", i + 1));
        let at = |key: &str| format!("`{key}` of [[group]] '{name}' in {file}");
        if name.is_empty() || name.contains(['/', '+', '#', ' ']) {
            return Err(input!(
                "{}: '{name}' cannot name a group (it may appear in topics); use letters, digits, - or _",
                at("name")
            ));
        }
        if groups.iter().any(|g| g.name == name) {
            return Err(input!(
                "{}: two groups are named '{name}'; give each its own name",
                at("name")
            ));
        }
        let range = match &spec.devices {
            Some(toml::Value::Integer(n)) if *n > 0 => next..next + *n as usize,
            Some(toml::Value::String(r)) => parse_range(r).ok_or_else(|| {
                input!(
                    "{}: '{r}' is not a range of devices; write a count (devices = 20) or positions of the fleet, e.g. \"1..20\"",
                    at("devices")
                )
            })?,
            Some(other) => {
                return Err(input!(
                    "{}: {other} is not a number of devices; write devices = 20 or devices = \"21..40\"",
                    at("devices")
                ));
            }
            None => return Err(input!("{}: missing; say how many devices the group has, e.g. devices = 20", at("devices"))),
        };
        if let Some(g) = groups
            .iter()
            .find(|g| g.range.start < range.end && range.start < g.range.end)
        {
            return Err(input!(
                "{}: devices {}..{} overlap group '{}' ({}..{}); give each device one group",
                at("devices"),
                range.start + 1,
                range.end,
                g.name,
                g.range.start + 1,
                g.range.end
            ));
        }
        next = next.max(range.end);
        let interval = spec
            .interval
            .as_deref()
            .map(|d| validate::parse_duration(d, &at("interval")))
            .transpose()?;
        let rate = settings::rate(spec.rate.map(|r| Sourced {
            value: r.text(),
            origin: at("rate"),
        }))?;
        if interval.is_some() && rate.is_some() {
            return Err(input!("{}: give interval or rate, not both", at("rate")));
        }
        let schedule = (interval.is_some() || rate.is_some()).then(|| {
            settings::schedule(
                interval.map(|d| Sourced {
                    value: d,
                    origin: at("interval"),
                }),
                rate,
                range.len(),
            )
        });
        let topic = match spec.topic {
            Some(t) => {
                let sample = t.replace("{id}", "freezer1").replace("{group}", &name);
                validate::topic(&sample, &at("topic"))?;
                if let Some(bad) = sample.find('{') {
                    return Err(input!(
                        "{}: '{t}' has an unknown placeholder at '{}'; use {{id}} and {{group}}",
                        at("topic"),
                        &sample[bad..]
                    ));
                }
                Some(t)
            }
            None => None,
        };
        let qos = spec
            .qos
            .map(|q| {
                settings::qos(Some(Sourced {
                    value: q,
                    origin: at("qos"),
                }))
            })
            .transpose()?;
        let fields = spec
            .fields
            .map(|f| Fields::parse(&f).map_err(|why| input!("{}: {why}", at("fields"))))
            .transpose()?;
        let template = match spec.template {
            None => None,
            Some(p) => {
                if fields.is_some() {
                    return Err(input!("{}: give fields or a template, not both", at("template")));
                }
                let path = match dir {
                    Some(d) if p.is_relative() => d.join(p),
                    _ => p,
                };
                Some(Arc::new(settings::template(&path, &at("template"))?))
            }
        };
        let model = spec.model.unwrap_or_default();
        if let Some(sp) = model.setpoint
            && !crate::freezer::model::SETPOINT_RANGE.contains(&sp)
        {
            return Err(input!(
                "{}: setpoint {sp} °C is outside -40 to -5 °C",
                at("model")
            ));
        }
        if let Some(r) = model.door_rate
            && !(0.0..=120.0).contains(&r)
        {
            return Err(input!(
                "{}: door_rate {r} is not openings per hour from 0 to 120",
                at("model")
            ));
        }
        groups.push(Group {
            name,
            range,
            id_prefix: spec.id_prefix,
            schedule,
            topic,
            qos,
            fields,
            template,
            model,
        });
    }
    groups.sort_by_key(|g| g.range.start);
    let mut expect = 0;
    for g in &groups {
        if g.range.start != expect {
            return Err(input!(
                "[[group]] in {file}: devices {}..{} belong to no group; every device of the fleet needs one",
                expect + 1,
                g.range.start
            ));
        }
        expect = g.range.end;
    }
    Ok(groups)
}

/// "1..20": positions 1 to 20 of the fleet, as 0..20.
fn parse_range(r: &str) -> Option<Range<usize>> {
    let (a, b) = r.split_once("..")?;
    let (a, b): (usize, usize) = (
        a.trim().parse().ok()?,
        b.trim().trim_start_matches('=').parse().ok()?,
    );
    (a >= 1 && b >= a).then(|| a - 1..b)
}

/// The whole fleet's size with these groups.
pub fn total(groups: &[Group]) -> usize {
    groups.iter().map(|g| g.range.end).max().unwrap_or(0)
}

/// A group's schedule's events per second, fleet-wide.
pub fn target_rate(g: &Group, fleet: Schedule) -> Option<f64> {
    g.schedule.unwrap_or(fleet).target_rate(g.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layer::RateValue;
    use std::time::Duration;

    fn spec(devices: toml::Value) -> GroupSpec {
        GroupSpec {
            devices: Some(devices),
            ..Default::default()
        }
    }

    #[test]
    fn counts_and_ranges_cover_the_fleet_once() {
        let g = check(
            vec![
                spec(toml::Value::Integer(3)),
                spec(toml::Value::String("4..10".into())),
            ],
            "f.toml",
            None,
        )
        .unwrap();
        assert_eq!((g[0].range.clone(), g[1].range.clone()), (0..3, 3..10));
        assert_eq!((g[0].name.as_str(), g[1].name.as_str()), ("group1", "group2"));
        assert_eq!(total(&g), 10);
        let err = |specs: Vec<GroupSpec>| check(specs, "f.toml", None).unwrap_err().to_string();
        assert!(
            err(vec![
                spec(toml::Value::Integer(3)),
                spec(toml::Value::String("2..5".into()))
            ])
            .contains("overlap group 'group1'")
        );
        assert!(
            err(vec![spec(toml::Value::String("3..5".into()))]).contains("devices 1..2 belong to no group")
        );
        assert!(err(vec![spec(toml::Value::String("five".into()))]).contains("is not a range of devices"));
        assert!(
            err(vec![GroupSpec::default()]).contains("`devices` of [[group]] 'group1' in f.toml: missing")
        );
        let mut topic = spec(toml::Value::Integer(1));
        topic.topic = Some("freezers/{site}".into());
        assert!(err(vec![topic]).contains("unknown placeholder at '{site}'"));
    }

    #[test]
    fn a_groups_topic_and_rate() {
        let mut s = spec(toml::Value::Integer(4));
        s.name = Some("old".into());
        s.topic = Some("freezers/{group}/{id}".into());
        s.rate = Some(RateValue::Number(2.0));
        let g = &check(vec![s], "f.toml", None).unwrap()[0];
        assert_eq!(g.topic_for("freezer3").as_deref(), Some("freezers/old/freezer3"));
        // 2 events/s over the group's 4 devices: one every 2 s each.
        assert_eq!(
            g.schedule.and_then(|s| s.interval()),
            Some(Duration::from_secs(2))
        );
        assert_eq!(target_rate(g, Schedule::OnDemand), Some(2.0));
    }
}
