-- When a delivery was let go (at once, or when its target's max_frequency
-- period ended for a held one): throttling counts the period from there,
-- whether or not the receiver has answered yet, so a flood to a receiver
-- that is down is bounded too.
ALTER TABLE alert_deliveries ADD COLUMN released_at timestamptz;
UPDATE alert_deliveries SET released_at = created_at WHERE state IN ('pending', 'sent', 'failed');
DROP INDEX alert_deliveries_last_sent;
CREATE INDEX alert_deliveries_released ON alert_deliveries (target, kind, subject, released_at DESC)
    WHERE released_at IS NOT NULL;
