//! Subscription filters (docs/protocol.md 2): by event type, agent and department.

use crate::event::{AgentEvent, EventType};

/// What a subscription lets through. The default lets everything through.
///
/// Types are kept as a bit set: the Registry checks the filter once per event
/// per subscriber, so the check should cost a mask, not a search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    types: Option<u16>,
    agent_id: Option<String>,
    department: Option<String>,
}

impl Filter {
    /// A filter on types (any of them), agent and department (all that are set).
    pub fn new(
        types: Option<Vec<EventType>>,
        agent_id: Option<String>,
        department: Option<String>,
    ) -> Self {
        Filter {
            types: types.map(|types| types.iter().fold(0, |mask, t| mask | t.bit())),
            agent_id,
            department,
        }
    }

    /// Whether this filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.types.is_none() && self.agent_id.is_none() && self.department.is_none()
    }

    /// Whether `event` passes. An event without an agent (or department) does
    /// not pass a filter on agent (or department).
    pub fn matches(&self, event: &AgentEvent) -> bool {
        let type_ok = self
            .types
            .is_none_or(|mask| mask & event.event_type().bit() != 0);
        let agent_ok = self
            .agent_id
            .as_deref()
            .is_none_or(|wanted| event.agent_id() == Some(wanted));
        let department_ok = self
            .department
            .as_deref()
            .is_none_or(|wanted| event.department() == Some(wanted));
        type_ok && agent_ok && department_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentStart, OrchestrationStart, ToolCall};

    fn tool_call(agent: &str) -> AgentEvent {
        AgentEvent::new(
            "e",
            ToolCall {
                agent_id: agent.into(),
                tool_name: "search".into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn each_filter_narrows() {
        let start = AgentEvent::new(
            "e",
            AgentStart {
                agent_id: "a".into(),
                department: Some("story".into()),
                ..Default::default()
            },
        );
        let orchestration = AgentEvent::new("e", OrchestrationStart::default());
        assert!(Filter::default().matches(&start));
        assert!(Filter::default().is_empty());

        let only_tools = Filter::new(Some(vec![EventType::ToolCall]), None, None);
        assert!(only_tools.matches(&tool_call("a")));
        assert!(!only_tools.matches(&start));

        let agent_a = Filter::new(None, Some("a".into()), None);
        assert!(agent_a.matches(&tool_call("a")));
        assert!(!agent_a.matches(&tool_call("b")));
        assert!(!agent_a.matches(&orchestration));

        let story = Filter::new(None, None, Some("story".into()));
        assert!(story.matches(&start));
        assert!(!story.matches(&tool_call("a")));

        let both = Filter::new(Some(vec![EventType::AgentStart]), Some("a".into()), None);
        assert!(both.matches(&start));
        assert!(!both.matches(&tool_call("a")));
    }
}
