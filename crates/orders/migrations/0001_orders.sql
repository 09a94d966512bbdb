-- Orders: one row per sold order id, written idempotently by the order consumer.
CREATE TABLE orders (
    order_id       text    PRIMARY KEY,
    product_id     bigint  NOT NULL,
    user_id        bigint  NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    price_cents    bigint  NOT NULL CHECK (price_cents >= 0),
    status         text    NOT NULL CHECK (status IN ('awaiting_payment', 'paid', 'cancelled')),
    epoch          bigint  NOT NULL,
    sold_at_ms     bigint  NOT NULL,
    created_at_ms  bigint  NOT NULL,
    expires_at_ms  bigint  NOT NULL,
    updated_at_ms  bigint  NOT NULL,
    stock_returned boolean NOT NULL DEFAULT false
);

CREATE INDEX orders_product_epoch ON orders (product_id, epoch);
-- The sweeper's two queries: unpaid past the deadline, cancelled with stock not returned.
CREATE INDEX orders_unpaid_deadline ON orders (expires_at_ms) WHERE status = 'awaiting_payment';
CREATE INDEX orders_stock_unreturned ON orders (expires_at_ms)
    WHERE status = 'cancelled' AND NOT stock_returned;
