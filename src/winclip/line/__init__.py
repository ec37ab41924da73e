"""On the line: a watched folder in, the record and MQTT/webhook messages out, each photo exactly once.

`winclip watch` (winclip.cli.watch) runs `run.Line`: `watcher` finds complete photos, `journal` makes each
one finished exactly once across kills, `follow` keeps the profile at its stored revision, `outbox` delivers
the `messages` in order to `mqtt` and `webhook` sinks with retries, `metrics` serves Prometheus figures.
`publish` lets the station (`winclip serve --mqtt/--webhook`) send its own results the same way. Needs the
`line` extra (paho-mqtt, watchdog) besides `serve`'s record.
"""
