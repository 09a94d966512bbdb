-- Per product, the epoch before which orders are void: a forced re-prewarm started a new
-- epoch with fresh stock, so an earlier epoch's sale stored after it is stored cancelled.
CREATE TABLE voided_epochs (
    product_id   bigint PRIMARY KEY,
    before_epoch bigint NOT NULL
);
