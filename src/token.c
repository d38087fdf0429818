/*
 * token.c
 *		The access token cache of one channel (see token.h).  No I/O, no
 *		SQL: the checker asks what to do, sends the request, and reports
 *		what came back.
 */
#include "postgres.h"

#include "token.h"

/* A token is renewed this long before the channel says it expires. */
#define TOKEN_RENEW_EARLY_S 60

/* What a check needing the token can do now. */
TokenState
token_state(const ChannelToken *token, TimestampTz now)
{
	if (token->value && now < token->valid_until)
		return TOKEN_READY;
	if (token->requested)
		return TOKEN_WAIT;
	if (token->error[0])
		return TOKEN_FAILED;
	return TOKEN_FETCH;
}

/* A token request was sent. */
void
token_request_started(ChannelToken *token)
{
	Assert(!token->requested);
	token->requested = true;
	token->error[0] = '\0';
}

/* The token request failed (never sent, or answered without a token). */
void
token_request_failed(ChannelToken *token, const char *error)
{
	token->requested = false;
	strlcpy(token->error, error && error[0] ? error : "the token answer could not be read",
			sizeof(token->error));
}

/*
 * A token came back, valid expires_in_s seconds: it replaces the old one,
 * and is renewed early so that no request carries a dying token.
 */
void
token_received(ChannelToken *token, MemoryContext context, const char *value,
			   int expires_in_s, TimestampTz now)
{
	token->requested = false;
	if (token->value)
		pfree(token->value);
	token->value = MemoryContextStrdup(context, value);
	token->generation++;
	token->valid_until = now +
		(int64) Max(expires_in_s - TOKEN_RENEW_EARLY_S, 1) * USECS_PER_SEC;
	token->error[0] = '\0';
}

/*
 * The channel refused the token of the given generation: it is dropped,
 * unless a newer one came meanwhile, so the next check fetches a new one.
 */
void
token_refused(ChannelToken *token, uint32 generation)
{
	if (token->value && generation == token->generation)
	{
		pfree(token->value);
		token->value = NULL;
	}
}

/* After a failed request has been reported to its checks: try again. */
void
token_retry(ChannelToken *token)
{
	token->error[0] = '\0';
}
