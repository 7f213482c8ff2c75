//! Load tool and benchmarks for event-pusher (see README).
