/* wire.h — the AMQP 0-9-1 wire format: frames, field tables, basic properties.
 *
 * Shared by the broker (src/), the load generator (cli/) and the fuzz target (fuzz/): every
 * decoder here is bounds-checked and returns an error for malformed input instead of
 * trusting lengths, because every byte comes from the network. */
#ifndef FERRY_WIRE_H
#define FERRY_WIRE_H

#include <stdint.h>

#include "buf.h"
#include "proto.h"

/* ---- frames ---- */

typedef struct frame {
    uint8_t type;
    uint16_t channel;
    uint32_t size;
    const uint8_t *payload;
} frame;

/* Parses one frame from p[0..n). Returns the bytes it spans (> 0), 0 if more bytes are
 * needed, WIRE_TOO_LARGE for a frame over frame_max (known from its header alone), or
 * WIRE_BAD_END for a bad frame-end octet; f is filled as far as known, and *why says what
 * went wrong. frame_max counts the whole frame, as the spec's frame-max does. */
#define WIRE_TOO_LARGE (-1)
#define WIRE_BAD_END (-2)
long wire_parse_frame(const uint8_t *p, size_t n, uint32_t frame_max, frame *f, const char **why);
/* Formats bytes as RabbitMQ prints them in error texts (an Erlang binary: <<"text">> when
 * printable, <<1,2,3>> otherwise), truncated to fit. */
void wire_format_octets(const uint8_t *p, size_t n, char *out, size_t outn);

/* Method frames: frame_begin returns a mark to pass to frame_end, which patches the size
 * and writes the frame-end octet. */
size_t frame_begin(buf *b, uint8_t type, uint16_t channel);
void frame_end(buf *b, size_t mark);
static inline size_t method_begin(buf *b, uint16_t channel, unsigned mid) {
    size_t m = frame_begin(b, FRAME_METHOD, channel);
    buf_u32(b, mid);
    return m;
}
void wire_heartbeat(buf *b);
/* The content header frame alone (basic class, the body size, the property bytes as given). */
void wire_content_header(buf *b, uint16_t channel, const uint8_t *props, size_t props_len, uint64_t body_len);
/* A content header frame followed by body frames of at most frame_max bytes each. */
void wire_content(buf *b, uint16_t channel, const uint8_t *props, size_t props_len, const uint8_t *body,
                  uint64_t body_len, uint32_t frame_max);

/* ---- field tables ---- */

/* One decoded field value. Strings, byte arrays, nested tables and arrays are borrowed
 * slices of the original bytes (for 'F' and 'A', the encoded contents without the length). */
typedef struct fval {
    char type;
    int64_t i;  /* every integer type, 't' (0/1) and 'T' */
    double d;   /* 'f' and 'd' */
    uint8_t dec_scale;
    uint32_t dec_value;
    slice s;    /* 'S', 'x', 'F', 'A' */
} fval;

/* Validates a whole table's encoding (types, lengths, nesting up to a limit). 0 if good. */
int table_validate(slice t);
/* Iterates: returns 1 with key and value, 0 at the end, -1 on malformed input. */
int table_next(rd *r, slice *key, fval *v);
/* Iterates an array's values. */
int array_next(rd *r, fval *v);
/* Finds key in a (validated) table; 1 if found. */
int table_get(slice t, const char *key, fval *v);
static inline int fval_is_int(const fval *v) {
    return v->type == 'b' || v->type == 'B' || v->type == 's' || v->type == 'u' || v->type == 'I' ||
           v->type == 'i' || v->type == 'l' || v->type == 'L' || v->type == 'U';
}
static inline int fval_is_str(const fval *v) { return v->type == 'S' || v->type == 'x'; }
/* RabbitMQ compares arguments by type class and value: all integer types are one class. */
int fval_equal(const fval *a, const fval *b);
/* RabbitMQ's name for a field type, as it appears in error texts ("signedint", "longstr"…). */
const char *fval_type_name(char type);
/* Writes a value into a readable form for error messages. */
void fval_format(const fval *v, char *out, size_t n);
/* Appends one table entry (key + encoded value) to b. */
void table_put_longstr(buf *b, const char *key, const char *s, size_t n);
void table_put_bool(buf *b, const char *key, int v);
void table_put_table(buf *b, const char *key, const uint8_t *t, size_t n);

/* ---- basic content-header properties ---- */

/* The few properties the broker itself looks at, located inside the publisher's raw
 * property bytes (which are passed on unchanged). */
typedef struct props_view {
    uint16_t flags;
    slice headers;     /* table contents, if PROP_HEADERS */
    uint8_t delivery_mode;
    uint8_t priority;
    slice reply_to;
    slice expiration;
    slice message_id;
    slice correlation_id;
    slice user_id;
    uint64_t timestamp;
} props_view;

/* Parses the property list that follows class-id/weight/body-size in a content header.
 * Returns 0 if well-formed. */
int props_parse(slice raw, props_view *pv);
/* Re-encodes well-formed properties with another headers table (the table's contents) and,
 * if drop_expiration, without the expiration property; everything else is copied as is. */
void props_rewrite(slice raw, slice headers, int drop_expiration, buf *out);
/* The same with another message-id (at most 255 bytes) too. */
void props_rewrite_id(slice raw, slice headers, slice message_id, buf *out);

#endif
