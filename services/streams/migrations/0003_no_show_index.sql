-- Streams' background loop cancels scheduled streams that never started (FANBANK_STREAMS_NO_SHOW_HOURS):
-- it reads the oldest scheduled starts among the streams still SCHEDULED, and only those.
CREATE INDEX streams_scheduled ON streams.streams (scheduled_start_at)
    WHERE status = 'SCHEDULED' AND scheduled_start_at IS NOT NULL;
