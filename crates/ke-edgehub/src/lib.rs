//! edgecore's link to the cloud (upstream's EdgeHub, module name `websocket`, group `hub`).

pub mod dispatch;
pub mod rate;
pub mod reconnect;
