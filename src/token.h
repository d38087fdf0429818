/*
 * token.h
 *		A channel's access token (OAuth2 client credentials, as PayPal uses):
 *		kept while valid, renewed a minute before it expires, dropped when
 *		the channel refuses it.  Only state: the checker sends the token
 *		request through the channel's driver and the HTTP engine.
 */
#ifndef PAYSYNC_TOKEN_H
#define PAYSYNC_TOKEN_H

#include "postgres.h"

#include "utils/timestamp.h"

/* What a check of a channel with tokens can do now. */
typedef enum TokenState
{
	TOKEN_READY,				/* a valid token is at hand */
	TOKEN_WAIT,					/* a token request is in flight: wait */
	TOKEN_FETCH,				/* no token and none asked for: request one */
	TOKEN_FAILED				/* the last request failed */
} TokenState;

typedef struct ChannelToken
{
	char	   *value;			/* secret; NULL until fetched */
	uint32		generation;		/* counts the tokens fetched */
	TimestampTz valid_until;
	bool		requested;		/* a token request is in flight */
	char		error[200];		/* why the last token request failed */
} ChannelToken;

extern TokenState token_state(const ChannelToken *token, TimestampTz now);
extern void token_request_started(ChannelToken *token);
extern void token_request_failed(ChannelToken *token, const char *error);
extern void token_received(ChannelToken *token, MemoryContext context,
						   const char *value, int expires_in_s, TimestampTz now);
extern void token_refused(ChannelToken *token, uint32 generation);
extern void token_retry(ChannelToken *token);

#endif							/* PAYSYNC_TOKEN_H */
