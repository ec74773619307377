/* names.c — readable names for reply codes and methods, for error texts and logs. */
#include "proto.h"

const char *reply_code_name(int code) {
    switch (code) {
    case REPLY_SUCCESS: return "REPLY_SUCCESS";
    case CONTENT_TOO_LARGE: return "CONTENT_TOO_LARGE";
    case NO_ROUTE: return "NO_ROUTE";
    case NO_CONSUMERS: return "NO_CONSUMERS";
    case CONNECTION_FORCED: return "CONNECTION_FORCED";
    case INVALID_PATH: return "INVALID_PATH";
    case ACCESS_REFUSED: return "ACCESS_REFUSED";
    case NOT_FOUND: return "NOT_FOUND";
    case RESOURCE_LOCKED: return "RESOURCE_LOCKED";
    case PRECONDITION_FAILED: return "PRECONDITION_FAILED";
    case FRAME_ERROR: return "FRAME_ERROR";
    case SYNTAX_ERROR: return "SYNTAX_ERROR";
    case COMMAND_INVALID: return "COMMAND_INVALID";
    case CHANNEL_ERROR: return "CHANNEL_ERROR";
    case UNEXPECTED_FRAME: return "UNEXPECTED_FRAME";
    case RESOURCE_ERROR: return "RESOURCE_ERROR";
    case NOT_ALLOWED: return "NOT_ALLOWED";
    case NOT_IMPLEMENTED: return "NOT_IMPLEMENTED";
    case INTERNAL_ERROR: return "INTERNAL_ERROR";
    }
    return "UNKNOWN";
}

/* RabbitMQ names methods in error texts as 'class.method', e.g. 'queue.declare'. */
const char *method_name(unsigned mid) {
    switch (mid) {
    case CONNECTION_START: return "connection.start";
    case CONNECTION_START_OK: return "connection.start_ok";
    case CONNECTION_SECURE: return "connection.secure";
    case CONNECTION_SECURE_OK: return "connection.secure_ok";
    case CONNECTION_TUNE: return "connection.tune";
    case CONNECTION_TUNE_OK: return "connection.tune_ok";
    case CONNECTION_OPEN: return "connection.open";
    case CONNECTION_OPEN_OK: return "connection.open_ok";
    case CONNECTION_CLOSE: return "connection.close";
    case CONNECTION_CLOSE_OK: return "connection.close_ok";
    case CONNECTION_BLOCKED: return "connection.blocked";
    case CONNECTION_UNBLOCKED: return "connection.unblocked";
    case CONNECTION_UPDATE_SECRET: return "connection.update_secret";
    case CONNECTION_UPDATE_SECRET_OK: return "connection.update_secret_ok";
    case CHANNEL_OPEN: return "channel.open";
    case CHANNEL_OPEN_OK: return "channel.open_ok";
    case CHANNEL_FLOW: return "channel.flow";
    case CHANNEL_FLOW_OK: return "channel.flow_ok";
    case CHANNEL_CLOSE: return "channel.close";
    case CHANNEL_CLOSE_OK: return "channel.close_ok";
    case EXCHANGE_DECLARE: return "exchange.declare";
    case EXCHANGE_DECLARE_OK: return "exchange.declare_ok";
    case EXCHANGE_DELETE: return "exchange.delete";
    case EXCHANGE_DELETE_OK: return "exchange.delete_ok";
    case EXCHANGE_BIND: return "exchange.bind";
    case EXCHANGE_BIND_OK: return "exchange.bind_ok";
    case EXCHANGE_UNBIND: return "exchange.unbind";
    case EXCHANGE_UNBIND_OK: return "exchange.unbind_ok";
    case QUEUE_DECLARE: return "queue.declare";
    case QUEUE_DECLARE_OK: return "queue.declare_ok";
    case QUEUE_BIND: return "queue.bind";
    case QUEUE_BIND_OK: return "queue.bind_ok";
    case QUEUE_PURGE: return "queue.purge";
    case QUEUE_PURGE_OK: return "queue.purge_ok";
    case QUEUE_DELETE: return "queue.delete";
    case QUEUE_DELETE_OK: return "queue.delete_ok";
    case QUEUE_UNBIND: return "queue.unbind";
    case QUEUE_UNBIND_OK: return "queue.unbind_ok";
    case BASIC_QOS: return "basic.qos";
    case BASIC_QOS_OK: return "basic.qos_ok";
    case BASIC_CONSUME: return "basic.consume";
    case BASIC_CONSUME_OK: return "basic.consume_ok";
    case BASIC_CANCEL: return "basic.cancel";
    case BASIC_CANCEL_OK: return "basic.cancel_ok";
    case BASIC_PUBLISH: return "basic.publish";
    case BASIC_RETURN: return "basic.return";
    case BASIC_DELIVER: return "basic.deliver";
    case BASIC_GET: return "basic.get";
    case BASIC_GET_OK: return "basic.get_ok";
    case BASIC_GET_EMPTY: return "basic.get_empty";
    case BASIC_ACK: return "basic.ack";
    case BASIC_REJECT: return "basic.reject";
    case BASIC_RECOVER_ASYNC: return "basic.recover_async";
    case BASIC_RECOVER: return "basic.recover";
    case BASIC_RECOVER_OK: return "basic.recover_ok";
    case BASIC_NACK: return "basic.nack";
    case CONFIRM_SELECT: return "confirm.select";
    case CONFIRM_SELECT_OK: return "confirm.select_ok";
    case TX_SELECT: return "tx.select";
    case TX_SELECT_OK: return "tx.select_ok";
    case TX_COMMIT: return "tx.commit";
    case TX_COMMIT_OK: return "tx.commit_ok";
    case TX_ROLLBACK: return "tx.rollback";
    case TX_ROLLBACK_OK: return "tx.rollback_ok";
    }
    return "unknown";
}
