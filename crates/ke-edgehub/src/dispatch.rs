//! Where a message from the cloud goes on the edge's bus, by upstream edgehub's rules
//! (its message handlers, first match wins).

use ke_message::Message;
use ke_message::constants::{group, source};

/// The destination of a downstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An answer to a request an edge module is waiting on (`send_sync`): deliver by parent id.
    Reply,
    /// Every module of a bus group.
    Group(&'static str),
    /// One module by name.
    Module(&'static str),
    /// Nothing on the edge handles it; the reason is logged.
    Unroutable(&'static str),
}

/// Module names on the edge bus that downstream messages are addressed to.
pub mod modules {
    pub const EVENT_BUS: &str = "eventbus";
    pub const SERVICE_BUS: &str = "servicebus";
    pub const TASK_MANAGER: &str = "taskmanager";
}

pub fn route_downstream(message: &Message) -> Route {
    let is_reply = !message.header.parent_id.is_empty();
    match message.router.group.as_str() {
        group::RESOURCE | group::FUNC if is_reply => Route::Reply,
        group::RESOURCE | group::FUNC => Route::Group(group::META),
        group::TWIN => Route::Group(group::TWIN),
        group::USER if is_reply => Route::Reply,
        group::USER => match message.router.source.as_str() {
            source::ROUTER_EVENT_BUS => Route::Module(modules::EVENT_BUS),
            source::ROUTER_SERVICE_BUS => Route::Module(modules::SERVICE_BUS),
            _ => Route::Unroutable("user-group message from an unknown router source"),
        },
        group::TASK_MANAGER => Route::Module(modules::TASK_MANAGER),
        _ => Route::Unroutable("no edge module handles this group"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(group: &str, source: &str, parent: &str) -> Message {
        Message::new()
            .with_route(source, group, "default/pod/web", "insert")
            .with_parent_id(parent)
    }

    #[test]
    fn follows_upstream_edgehub_dispatch() {
        assert_eq!(
            route_downstream(&msg("resource", "edgecontroller", "")),
            Route::Group("meta")
        );
        assert_eq!(
            route_downstream(&msg("func", "x", "")),
            Route::Group("meta")
        );
        assert_eq!(
            route_downstream(&msg("resource", "edgecontroller", "p")),
            Route::Reply
        );
        assert_eq!(
            route_downstream(&msg("twin", "devicecontroller", "")),
            Route::Group("twin")
        );
        // Twin replies go to the twin module too: it matches them itself.
        assert_eq!(
            route_downstream(&msg("twin", "devicecontroller", "p")),
            Route::Group("twin")
        );
        assert_eq!(
            route_downstream(&msg("user", "router_eventbus", "")),
            Route::Module("eventbus")
        );
        assert_eq!(
            route_downstream(&msg("user", "router_servicebus", "")),
            Route::Module("servicebus")
        );
        assert_eq!(
            route_downstream(&msg("user", "router_servicebus", "p")),
            Route::Reply
        );
        assert_eq!(
            route_downstream(&msg("taskmanager", "x", "")),
            Route::Module("taskmanager")
        );
        assert!(matches!(
            route_downstream(&msg("user", "x", "")),
            Route::Unroutable(_)
        ));
        assert!(matches!(
            route_downstream(&msg("bogus", "x", "")),
            Route::Unroutable(_)
        ));
    }
}
