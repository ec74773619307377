/* proto.h — AMQP 0-9-1 constants: frame types, class and method ids, reply codes.
 * Numbers from the AMQP 0-9-1 specification (amqp0-9-1.xml) and RabbitMQ's extensions. */
#ifndef FERRY_PROTO_H
#define FERRY_PROTO_H

#define FRAME_METHOD 1
#define FRAME_HEADER 2
#define FRAME_BODY 3
#define FRAME_HEARTBEAT 8
#define FRAME_END 0xCE
#define FRAME_MIN_SIZE 4096 /* spec: frame-min-size */
#define FRAME_OVERHEAD 8    /* type + channel + size + frame-end */

/* A method id: class in the high 16 bits, method in the low 16. */
#define MID(c, m) (((unsigned)(c) << 16) | (unsigned)(m))

#define CLASS_CONNECTION 10
#define CLASS_CHANNEL 20
#define CLASS_EXCHANGE 40
#define CLASS_QUEUE 50
#define CLASS_BASIC 60
#define CLASS_CONFIRM 85
#define CLASS_TX 90

#define CONNECTION_START MID(10, 10)
#define CONNECTION_START_OK MID(10, 11)
#define CONNECTION_SECURE MID(10, 20)
#define CONNECTION_SECURE_OK MID(10, 21)
#define CONNECTION_TUNE MID(10, 30)
#define CONNECTION_TUNE_OK MID(10, 31)
#define CONNECTION_OPEN MID(10, 40)
#define CONNECTION_OPEN_OK MID(10, 41)
#define CONNECTION_CLOSE MID(10, 50)
#define CONNECTION_CLOSE_OK MID(10, 51)
#define CONNECTION_BLOCKED MID(10, 60)
#define CONNECTION_UNBLOCKED MID(10, 61)
#define CONNECTION_UPDATE_SECRET MID(10, 70)
#define CONNECTION_UPDATE_SECRET_OK MID(10, 71)

#define CHANNEL_OPEN MID(20, 10)
#define CHANNEL_OPEN_OK MID(20, 11)
#define CHANNEL_FLOW MID(20, 20)
#define CHANNEL_FLOW_OK MID(20, 21)
#define CHANNEL_CLOSE MID(20, 40)
#define CHANNEL_CLOSE_OK MID(20, 41)

#define EXCHANGE_DECLARE MID(40, 10)
#define EXCHANGE_DECLARE_OK MID(40, 11)
#define EXCHANGE_DELETE MID(40, 20)
#define EXCHANGE_DELETE_OK MID(40, 21)
#define EXCHANGE_BIND MID(40, 30)
#define EXCHANGE_BIND_OK MID(40, 31)
#define EXCHANGE_UNBIND MID(40, 40)
#define EXCHANGE_UNBIND_OK MID(40, 51)

#define QUEUE_DECLARE MID(50, 10)
#define QUEUE_DECLARE_OK MID(50, 11)
#define QUEUE_BIND MID(50, 20)
#define QUEUE_BIND_OK MID(50, 21)
#define QUEUE_PURGE MID(50, 30)
#define QUEUE_PURGE_OK MID(50, 31)
#define QUEUE_DELETE MID(50, 40)
#define QUEUE_DELETE_OK MID(50, 41)
#define QUEUE_UNBIND MID(50, 50)
#define QUEUE_UNBIND_OK MID(50, 51)

#define BASIC_QOS MID(60, 10)
#define BASIC_QOS_OK MID(60, 11)
#define BASIC_CONSUME MID(60, 20)
#define BASIC_CONSUME_OK MID(60, 21)
#define BASIC_CANCEL MID(60, 30)
#define BASIC_CANCEL_OK MID(60, 31)
#define BASIC_PUBLISH MID(60, 40)
#define BASIC_RETURN MID(60, 50)
#define BASIC_DELIVER MID(60, 60)
#define BASIC_GET MID(60, 70)
#define BASIC_GET_OK MID(60, 71)
#define BASIC_GET_EMPTY MID(60, 72)
#define BASIC_ACK MID(60, 80)
#define BASIC_REJECT MID(60, 90)
#define BASIC_RECOVER_ASYNC MID(60, 100)
#define BASIC_RECOVER MID(60, 110)
#define BASIC_RECOVER_OK MID(60, 111)
#define BASIC_NACK MID(60, 120)

#define CONFIRM_SELECT MID(85, 10)
#define CONFIRM_SELECT_OK MID(85, 11)

#define TX_SELECT MID(90, 10)
#define TX_SELECT_OK MID(90, 11)
#define TX_COMMIT MID(90, 20)
#define TX_COMMIT_OK MID(90, 21)
#define TX_ROLLBACK MID(90, 30)
#define TX_ROLLBACK_OK MID(90, 31)

/* Reply codes (spec "constants"); soft errors close the channel, hard ones the connection. */
#define REPLY_SUCCESS 200
#define CONTENT_TOO_LARGE 311
#define NO_ROUTE 312
#define NO_CONSUMERS 313
#define CONNECTION_FORCED 320
#define INVALID_PATH 402
#define ACCESS_REFUSED 403
#define NOT_FOUND 404
#define RESOURCE_LOCKED 405
#define PRECONDITION_FAILED 406
#define FRAME_ERROR 501
#define SYNTAX_ERROR 502
#define COMMAND_INVALID 503
#define CHANNEL_ERROR 504
#define UNEXPECTED_FRAME 505
#define RESOURCE_ERROR 506
#define NOT_ALLOWED 530
#define NOT_IMPLEMENTED 540
#define INTERNAL_ERROR 541

/* Basic content-header property flags, in wire order (bit 15 first). */
#define PROP_CONTENT_TYPE (1u << 15)
#define PROP_CONTENT_ENCODING (1u << 14)
#define PROP_HEADERS (1u << 13)
#define PROP_DELIVERY_MODE (1u << 12)
#define PROP_PRIORITY (1u << 11)
#define PROP_CORRELATION_ID (1u << 10)
#define PROP_REPLY_TO (1u << 9)
#define PROP_EXPIRATION (1u << 8)
#define PROP_MESSAGE_ID (1u << 7)
#define PROP_TIMESTAMP (1u << 6)
#define PROP_TYPE (1u << 5)
#define PROP_USER_ID (1u << 4)
#define PROP_APP_ID (1u << 3)
#define PROP_CLUSTER_ID (1u << 2)

const char *reply_code_name(int code);
const char *method_name(unsigned mid);

#endif
