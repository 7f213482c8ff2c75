//! Event classes: the unit a backend subscribes to.
//!
//! Each class is one bit (like gateway intents) so that "does this backend
//! want this event" is a single AND on the hot path.

use std::fmt;

use crate::event::{ChatType, Event, EventBody};

/// One class of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventClass {
    Presence,
    Chat,
    Groupchat,
    Headline,
    Normal,
    Unacked,
    /// What the sidecar reports on itself (`backend.failing`, ...): never
    /// part of "all classes", only delivered where named.
    Operational,
}

impl EventClass {
    /// The six message classes: what "all classes" (no `events`) means.
    pub const ALL: [EventClass; 6] = [
        EventClass::Presence,
        EventClass::Chat,
        EventClass::Groupchat,
        EventClass::Headline,
        EventClass::Normal,
        EventClass::Unacked,
    ];

    /// Every class, operational included, in bit order.
    pub const EVERY: [EventClass; 7] = [
        EventClass::Presence,
        EventClass::Chat,
        EventClass::Groupchat,
        EventClass::Headline,
        EventClass::Normal,
        EventClass::Unacked,
        EventClass::Operational,
    ];

    pub fn bit(self) -> u8 {
        match self {
            EventClass::Presence => 1 << 0,
            EventClass::Chat => 1 << 1,
            EventClass::Groupchat => 1 << 2,
            EventClass::Headline => 1 << 3,
            EventClass::Normal => 1 << 4,
            EventClass::Unacked => 1 << 5,
            EventClass::Operational => 1 << 6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventClass::Presence => "presence",
            EventClass::Chat => "chat",
            EventClass::Groupchat => "groupchat",
            EventClass::Headline => "headline",
            EventClass::Normal => "normal",
            EventClass::Unacked => "unacked",
            EventClass::Operational => "operational",
        }
    }

    pub fn from_name(name: &str) -> Option<EventClass> {
        EventClass::EVERY.into_iter().find(|c| c.name() == name)
    }

    /// The class an event belongs to.
    pub fn of(event: &Event) -> EventClass {
        match &event.body {
            EventBody::Presence(_) => EventClass::Presence,
            EventBody::Unacked(_) => EventClass::Unacked,
            EventBody::Operational(_) => EventClass::Operational,
            EventBody::Chat(c) => match c.chat_type {
                ChatType::Chat => EventClass::Chat,
                ChatType::Groupchat => EventClass::Groupchat,
                ChatType::Headline => EventClass::Headline,
                ChatType::Normal => EventClass::Normal,
            },
        }
    }
}

impl fmt::Display for EventClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventClasses(u8);

impl EventClasses {
    /// The six message classes (the default); see [`EventClass::ALL`].
    pub const ALL: EventClasses = EventClasses(0b11_1111);
    /// Every class, operational included.
    pub const EVERY: EventClasses = EventClasses(0b111_1111);
    pub const NONE: EventClasses = EventClasses(0);

    pub fn from_bits(bits: u8) -> Self {
        EventClasses(bits & Self::EVERY.0)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn with(self, class: EventClass) -> Self {
        EventClasses(self.0 | class.bit())
    }

    pub fn contains(self, class: EventClass) -> bool {
        self.0 & class.bit() != 0
    }
}

impl FromIterator<EventClass> for EventClasses {
    fn from_iter<I: IntoIterator<Item = EventClass>>(iter: I) -> Self {
        iter.into_iter().fold(EventClasses::NONE, EventClasses::with)
    }
}

impl Default for EventClasses {
    fn default() -> Self {
        EventClasses::ALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_contract() {
        let bits: Vec<u8> = EventClass::ALL.iter().map(|c| c.bit()).collect();
        assert_eq!(bits, vec![1, 2, 4, 8, 16, 32]);
        let set: EventClasses = [EventClass::Chat, EventClass::Presence].into_iter().collect();
        assert_eq!(set.bits(), 0b11);
        assert!(set.contains(EventClass::Chat));
        assert!(!set.contains(EventClass::Groupchat));
        assert_eq!(EventClass::from_name("groupchat"), Some(EventClass::Groupchat));
        assert_eq!(EventClass::from_name("message"), None);
        assert_eq!(EventClass::Operational.bit(), 1 << 6);
        assert_eq!(EventClass::from_name("operational"), Some(EventClass::Operational));
        assert!(
            !EventClasses::ALL.contains(EventClass::Operational),
            "not in all classes"
        );
    }
}
