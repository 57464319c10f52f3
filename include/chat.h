/* chat: admission of a chat completion (POST /v0/llm/chat/completions and
 * /v1/chat/completions): validate the body, check the team's model list,
 * price it, reserve its worst case against the budget (402 before anything
 * goes upstream), record it in the ledger's begin journal, and hand it to
 * the upstream side. */
#ifndef PINMETER_CHAT_H
#define PINMETER_CHAT_H
#include "req.h"

/* The route's handler (req_serve_fn). */
enum MHD_Result chat_serve(req_t *r, struct MHD_Connection *c);

#endif
