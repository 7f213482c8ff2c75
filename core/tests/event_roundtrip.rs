//! Every kind of event a hook call produces reads back, from its canonical
//! JSON, as what was written (the record's reader lives in the
//! `event-pusher-event` crate; the hook translator here).

use event_pusher_core::{Event, HookTranslator};
use serde_json::json;

#[test]
fn every_kind_reads_back_what_was_written() {
    let calls = [
        json!({"hook":"user_send_message","from":"a@x/r","to":"b@x","type":"chat","body":"hé \"q\"","id":"m1","metadata":{"s":"v","i":-3,"u":18446744073709551615u64,"f":0.5,"b":true}}),
        json!({"hook":"filter_local_packet","from":"a@x","to":"b@x/r"}),
        json!({"hook":"user_available","jid":"a@x/r"}),
        json!({"hook":"unset_presence","jid":"a@x"}),
        json!({"hook":"unacknowledged_message","to":"b@x/r","from":"a@x","body":"x"}),
        json!({"hook":"unacknowledged_message","to":"b@x"}),
    ];
    for call in calls {
        let e = HookTranslator.translate(&call).unwrap();
        let back: Event = serde_json::from_slice(&e.to_json()).unwrap();
        // The record keeps milliseconds; everything else is exact.
        assert_eq!(back.to_json(), e.to_json());
        assert_eq!((back.id, back.body, back.metadata), (e.id, e.body, e.metadata));
    }
}
