/*
 * driver.c
 *		The driver registry, the options every channel takes whatever its
 *		driver (timeout_ms, max_inflight, schedule), schedule checks, and
 *		helpers drivers share: option access, HTTP error classification and
 *		reading fields of a JSON answer with PostgreSQL's own JSON parser.
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/resowner.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "lib/stringinfo.h"

#include "driver.h"

extern const PaysyncDriver http_json_driver;
extern const PaysyncDriver stripe_driver;
extern const PaysyncDriver wechatpay_driver;
extern const PaysyncDriver alipay_driver;
extern const PaysyncDriver paypal_driver;

static const PaysyncDriver *const all_drivers[] = {
	&http_json_driver,
	&stripe_driver,
	&wechatpay_driver,
	&alipay_driver,
	&paypal_driver,
};

/* Options any channel takes, handled here rather than by its driver. */
static const char *const common_option_names[] = {
	"timeout_ms", "max_inflight", "schedule", "close_on_expiry", NULL
};

/* The driver called name, or NULL. */
const PaysyncDriver *
driver_lookup(const char *name)
{
	for (size_t i = 0; i < lengthof(all_drivers); i++)
		if (strcmp(all_drivers[i]->name, name) == 0)
			return all_drivers[i];
	return NULL;
}

/* True if key is in the NULL-terminated list names. */
static bool
name_in_list(const char *key, const char *const *names)
{
	for (int i = 0; names && names[i]; i++)
		if (strcmp(names[i], key) == 0)
			return true;
	return false;
}

/* The value of top-level key in options, or NULL. */
JsonbValue *
option_value(Jsonb *options, const char *key)
{
	return getKeyJsonValueFromContainer(&options->root, key, strlen(key), NULL);
}

/*
 * Sets *value to the string option key; false if absent.  A value that is
 * not a string is an ERROR naming the option.
 */
bool
option_string(Jsonb *options, const char *key, char **value, const char *channel)
{
	JsonbValue *v = option_value(options, key);

	if (v == NULL)
		return false;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"%s\" for channel \"%s\": it must be a string",
						key, channel)));
	*value = pnstrdup(v->val.string.val, v->val.string.len);
	return true;
}

/*
 * Sets *value to the boolean option key; false if absent.  A value that is
 * not a boolean is an ERROR naming the option.
 */
bool
option_bool(Jsonb *options, const char *key, bool *value, const char *channel)
{
	JsonbValue *v = option_value(options, key);

	if (v == NULL)
		return false;
	if (v->type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"%s\" for channel \"%s\": it must be true or false",
						key, channel)));
	*value = v->val.boolean;
	return true;
}

/* Reads integer option key into *value if present, checking its range. */
static void
option_int(Jsonb *options, const char *key, int min, int max, int *value,
		   const char *channel)
{
	JsonbValue *v = option_value(options, key);
	char	   *text;
	char	   *end;
	long long	n;

	if (v == NULL)
		return;
	if (v->type == jbvNumeric)
		text = DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	else
		text = "";
	errno = 0;
	n = strtoll(text, &end, 10);
	if (text[0] == '\0' || *end != '\0' || errno != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"%s\" for channel \"%s\": it must be a whole number",
						key, channel)));
	if (n < min || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"%s\" for channel \"%s\": %lld is outside %d to %d",
						key, channel, (long long) n, min, max)));
	*value = (int) n;
}

/*
 * Parses text as an interval; NULL if it is not one.  The parser's ERROR is
 * caught in a subtransaction so the caller can say which option was wrong.
 */
static Interval *
parse_interval(const char *text)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Interval   *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		result = DatumGetIntervalP(DirectFunctionCall3(interval_in,
													   CStringGetDatum(text),
													   ObjectIdGetDatum(InvalidOid),
													   Int32GetDatum(-1)));
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		result = NULL;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return result;
}

/* Checks the "schedule" option: an array of interval strings. */
static void
option_schedule(Jsonb *options, const char *channel)
{
	JsonbValue *v = option_value(options, "schedule");
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	Interval  **items;
	int			n = 0;

	if (v == NULL)
		return;
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"schedule\" for channel \"%s\": it must be an array of intervals",
						channel),
				 errhint("For example: \"schedule\": [\"10s\", \"30s\", \"1min\"].")));

	items = palloc0(sizeof(Interval *) * (JsonContainerSize(v->val.binary.data) + 1));
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		char	   *text;

		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid option \"schedule\" for channel \"%s\": element %d is not an interval string",
							channel, n + 1)));
		text = pnstrdup(elem.val.string.val, elem.val.string.len);
		items[n] = parse_interval(text);
		if (items[n] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid option \"schedule\" for channel \"%s\": element %d (\"%s\") is not an interval",
							channel, n + 1, text)));
		n++;
	}
	schedule_check(items, n, "channel option \"schedule\"");
}

/*
 * Checks a schedule: 1 to 100 delays, each above zero and at most 7 days.
 * what names the argument for the message.
 */
void
schedule_check(Interval **items, int n, const char *what)
{
	Interval	zero = {0};
	Interval	week = {0};

	week.day = 7;
	if (n < 1 || n > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: it has %d delays", what, n),
				 errhint("A schedule has 1 to 100 delays.")));
	for (int i = 0; i < n; i++)
	{
		if (items[i] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("invalid %s: delay %d is null", what, i + 1)));
		if (!DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(items[i]),
											  IntervalPGetDatum(&zero))) ||
			DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(items[i]),
											 IntervalPGetDatum(&week))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: delay %d (%s) is not above zero and at most 7 days",
							what, i + 1,
							DatumGetCString(DirectFunctionCall1(interval_out,
																IntervalPGetDatum(items[i])))),
					 errhint("Each delay must be greater than 0 and at most 7 days.")));
	}
}

/*
 * Checks a channel definition and compiles it.  Every problem is an ERROR
 * saying which part is wrong.
 */
ChannelConfig *
channel_compile(const char *name, const char *driver_name, const char *base_url,
				Jsonb *options)
{
	ChannelConfig *config = palloc0(sizeof(ChannelConfig));
	const PaysyncDriver *driver = driver_lookup(driver_name);
	char		urlerr[160];
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (driver == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown driver \"%s\" for channel \"%s\"", driver_name, name),
				 errhint("Available drivers: http_json, stripe, wechatpay, alipay, paypal.")));

	if (!http_url_valid(base_url, urlerr, sizeof(urlerr)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base_url \"%s\" for channel \"%s\": %s",
						base_url, name, urlerr),
				 errhint("Give an absolute http:// or https:// URL, such as https://api.example.com.")));

	if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid options for channel \"%s\": they must be a JSON object", name)));

	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (!name_in_list(key, common_option_names) &&
			!name_in_list(key, driver->option_names))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%s\" for channel \"%s\" (driver %s)",
							key, name, driver->name)));
	}

	option_int(options, "timeout_ms", 100, 600000, &config->timeout_ms, name);
	option_int(options, "max_inflight", 1, 10000, &config->max_inflight, name);
	option_schedule(options, name);

	config->close_on_expiry = driver->close_on_expiry_default;
	if (option_bool(options, "close_on_expiry", &config->close_on_expiry, name) &&
		config->close_on_expiry && !driver->can_close)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"close_on_expiry\" for channel \"%s\": driver %s cannot close a trade",
						name, driver->name)));

	config->name = pstrdup(name);
	config->base_url = pstrdup(base_url);
	config->driver = driver;
	config->driver_config = driver->compile(name, base_url, options);
	return config;
}

/* True for a status a channel may map to: pending or a final one but expired. */
bool
is_settable_status(const char *status)
{
	static const char *const settable[] = {
		"pending", "succeeded", "failed", "cancelled", "closed", NULL
	};

	return name_in_list(status, settable);
}

/* Frees an OpenSSL key when the memory context holding its user goes. */
static void
key_free_callback(void *arg)
{
	crypto_key_free((CryptoKey *) arg);
}

/*
 * Loads the required key option key (PEM, or a bare base64 body): a key
 * that does not parse is an ERROR here, at create_channel, not a failure at
 * 3 a.m.  The key lives as long as CurrentMemoryContext.  Errors name the
 * option, never its value.
 */
CryptoKey *
option_key(Jsonb *options, const char *key, bool private_key, const char *channel)
{
	char	   *text;
	char		error[160];
	CryptoKey  *loaded;
	MemoryContextCallback *cb;

	if (!option_string(options, key, &text, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"%s\"", channel, key)));
	loaded = private_key ? crypto_private_key(text, error, sizeof(error)) :
		crypto_public_key(text, error, sizeof(error));
	if (loaded == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid option \"%s\" for channel \"%s\": %s", key, channel, error)));
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = key_free_callback;
	cb->arg = loaded;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return loaded;
}

/* Digits after the decimal point of a currency's minor unit (ISO 4217). */
static int
currency_exponent(const char *currency)
{
	static const char *const zero[] = {
		"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
		"UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF", NULL
	};
	static const char *const three[] = {
		"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND", NULL
	};

	for (int i = 0; zero[i]; i++)
		if (pg_strcasecmp(currency, zero[i]) == 0)
			return 0;
	for (int i = 0; three[i]; i++)
		if (pg_strcasecmp(currency, three[i]) == 0)
			return 3;
	return 2;
}

/*
 * Converts a decimal amount in major units ("88.88") to minor units of
 * currency (8888).  False if it is not a plain non-negative decimal with
 * at most the currency's digits after the point.
 */
bool
amount_to_minor(const char *decimal, const char *currency, int64 *minor)
{
	int			exponent = currency_exponent(currency);
	int64		value = 0;
	int			fraction_digits = -1;

	if (decimal == NULL || *decimal == '\0')
		return false;
	for (const char *p = decimal; *p; p++)
	{
		if (*p == '.' && fraction_digits < 0)
		{
			fraction_digits = 0;
			continue;
		}
		if (*p < '0' || *p > '9' || value > PG_INT64_MAX / 100)
			return false;
		value = value * 10 + (*p - '0');
		if (fraction_digits >= 0 && ++fraction_digits > exponent)
			return false;
	}
	for (int i = Max(fraction_digits, 0); i < exponent; i++)
		value *= 10;
	*minor = value;
	return true;
}

/* Makes *answer an error with the given message. */
void
answer_error(CheckAnswer *answer, const char *fmt,...)
{
	va_list		args;

	answer->is_error = true;
	answer->status = NULL;
	va_start(args, fmt);
	vsnprintf(answer->error, sizeof(answer->error), fmt, args);
	va_end(args);
	/* never keep half a multibyte character where the message was cut */
	answer->error[pg_mbcliplen(answer->error, strlen(answer->error),
							   sizeof(answer->error) - 1)] = '\0';
}

/* If the request failed in transport, makes *answer that error. */
bool
answer_transport_error(const HttpResult *result, CheckAnswer *answer)
{
	answer->retry_after_s = result->retry_after_s;
	if (result->status != 0)
		return false;
	answer_error(answer, "%s", result->error);
	return true;
}

/*
 * If the HTTP status is one the contract treats as an error whatever the
 * driver (429, 5xx), makes *answer that error.
 */
bool
answer_http_error(const HttpResult *result, CheckAnswer *answer)
{
	if (result->status == 429 || result->status >= 500)
	{
		answer_error(answer, "HTTP %ld from the channel", result->status);
		answer->retry_after_s = result->retry_after_s;
		return true;
	}
	return false;
}

/* Per field of json_fields(): its path, split, and how far it matches. */
typedef struct FieldPath
{
	int			n_segments;
	char	  **names;			/* per segment: a member name, or NULL ... */
	int		   *indexes;		/* ... for the array index here */
	int			matched;		/* segments matched by the members open now */
	int			raw_depth;		/* depth of the container being captured, or 0 */
} FieldPath;

/* The state of json_fields() while the parser walks the text. */
typedef struct FieldsWalk
{
	JsonLexContext *lex;
	JsonField  *fields;
	FieldPath  *paths;
	int			n;
	int			depth;			/* containers open */
	int			max_segments;	/* the longest path: deeper, nothing matches */
	int		   *element;		/* per depth to max_segments: array index read */
} FieldsWalk;

/*
 * A container opens, as the value of the member being read: the first
 * object or array at a path starts its raw text here.
 */
static void
walk_container_start(void *state)
{
	FieldsWalk *w = state;

	for (int i = 0; i < w->n; i++)
	{
		if (w->depth >= 1 && w->paths[i].matched == w->depth &&
			w->paths[i].n_segments == w->depth && w->fields[i].raw_start == NULL)
		{
			w->fields[i].raw_start = w->lex->token_start;
			w->paths[i].raw_depth = w->depth + 1;
		}
	}
	w->depth++;
	if (w->depth <= w->max_segments)
		w->element[w->depth] = -1;
}

/*
 * A container closes: a raw text being captured ends just after it, and
 * no member inside it is read any more.
 */
static void
walk_container_end(void *state)
{
	FieldsWalk *w = state;

	for (int i = 0; i < w->n; i++)
	{
		if (w->paths[i].raw_depth == w->depth)
		{
			w->fields[i].raw_len = w->lex->prev_token_terminator - w->fields[i].raw_start;
			w->paths[i].raw_depth = 0;
		}
		if (w->paths[i].matched > w->depth - 1)
			w->paths[i].matched = w->depth - 1;
	}
	w->depth--;
}

/*
 * A member starts at the current depth: an object field (name) or an
 * array element (index, name NULL).  The paths matched up to its container
 * match it too if their next segment is its name or index.
 */
static void
walk_member_start(FieldsWalk *w, const char *name, int index)
{
	int			d = w->depth;

	if (d > w->max_segments)
		return;
	for (int i = 0; i < w->n; i++)
	{
		FieldPath  *path = &w->paths[i];
		bool		hit;

		if (path->matched < d - 1)
			continue;
		hit = d <= path->n_segments &&
			(name ? path->names[d - 1] != NULL && strcmp(path->names[d - 1], name) == 0 :
			 path->names[d - 1] == NULL && path->indexes[d - 1] == index);
		path->matched = hit ? d : d - 1;
		if (hit && d == path->n_segments)
			w->fields[i].members++;
	}
}

/* An object field starts. */
static void
walk_field_start(void *state, char *fname, bool isnull)
{
	walk_member_start(state, fname, -1);
}

/* An array element starts. */
static void
walk_element_start(void *state, bool isnull)
{
	FieldsWalk *w = state;

	if (w->depth <= w->max_segments)
		walk_member_start(w, NULL, ++w->element[w->depth]);
}

/*
 * A scalar, the value of the member being read: the last one at a path is
 * noted, and the first that is not null (and of the type asked) taken.
 */
static void
walk_scalar(void *state, char *token, JsonTokenType tokentype)
{
	FieldsWalk *w = state;

	if (w->depth < 1 || w->depth > w->max_segments)
		return;
	for (int i = 0; i < w->n; i++)
	{
		JsonField  *f = &w->fields[i];

		if (w->paths[i].matched != w->depth || w->paths[i].n_segments != w->depth)
			continue;
		f->last = token;
		f->last_type = tokentype;
		if (tokentype == JSON_TOKEN_NULL ||
			(f->only != JSON_TOKEN_INVALID && tokentype != f->only))
			continue;
		if (f->count++ == 0)
		{
			f->value = token;
			f->type = tokentype;
		}
	}
}

/* Splits a json_fields() path into segments (indexes if flags say so). */
static void
split_field_path(const char *text, int flags, FieldPath *path)
{
	char	   *copy = pstrdup(text);
	char	   *saveptr = NULL;

	path->names = palloc0(sizeof(char *) * (strlen(text) + 1));
	path->indexes = palloc0(sizeof(int) * (strlen(text) + 1));
	for (char *seg = strtok_r(copy, ".", &saveptr); seg;
		 seg = strtok_r(NULL, ".", &saveptr))
	{
		char	   *bracket = (flags & JSON_FIELDS_INDEXES) ? strchr(seg, '[') : NULL;

		if (bracket != seg)
			path->names[path->n_segments++] = seg;
		while (bracket != NULL)
		{
			/* "[n]": ends the name before it, stands for element n */
			*bracket = '\0';
			path->names[path->n_segments] = NULL;
			path->indexes[path->n_segments++] = (int) strtol(bracket + 1, &bracket, 10);
			bracket = strchr(bracket, '[');
		}
	}
}

/*
 * The deepest nesting of containers in body, strings skipped.  Measured
 * before parsing so that a hostile answer never drives the recursive
 * parser deep.
 */
static int
json_nesting(const char *body, size_t len)
{
	int			depth = 0;
	int			deepest = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = body[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
			deepest = Max(deepest, ++depth);
		else if (c == '}' || c == ']')
			depth--;
	}
	return deepest;
}

/*
 * Reads the n fields asked for (each a path; see JsonField) from a JSON
 * body in one pass of PostgreSQL's JSON parser.  The text is checked first,
 * in this order: it must be text valid in the database encoding (UTF-8
 * with JSON_FIELDS_UTF8), start as an object (JSON_FIELDS_OBJECT) and nest
 * at most JSON_FIELDS_MAX_DEPTH levels (JSON_FIELDS_SHALLOW).  Without
 * JSON_FIELDS_SHALLOW, deep text can make the parser raise "stack depth
 * limit exceeded".
 */
JsonFieldsResult
json_fields(const char *body, size_t len, int flags, JsonField *fields, int n)
{
	int			encoding = (flags & JSON_FIELDS_UTF8) ? PG_UTF8 : GetDatabaseEncoding();
	FieldsWalk	walk;
	JsonSemAction sem;

	for (int i = 0; i < n; i++)
	{
		fields[i].value = fields[i].last = NULL;
		fields[i].type = fields[i].last_type = JSON_TOKEN_INVALID;
		fields[i].count = fields[i].members = 0;
		fields[i].raw_start = NULL;
		fields[i].raw_len = 0;
	}
	if (body == NULL || len > INT_MAX || strlen(body) != len ||
		!pg_verify_mbstr(encoding, body, (int) len, true))
		return JSON_FIELDS_BAD_TEXT;
	if ((flags & JSON_FIELDS_OBJECT) && body[strspn(body, " \t\r\n")] != '{')
		return JSON_FIELDS_NOT_OBJECT;
	if ((flags & JSON_FIELDS_SHALLOW) && json_nesting(body, len) > JSON_FIELDS_MAX_DEPTH)
		return JSON_FIELDS_TOO_DEEP;

	memset(&walk, 0, sizeof(walk));
	walk.fields = fields;
	walk.n = n;
	walk.paths = palloc0(sizeof(FieldPath) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		split_field_path(fields[i].path, flags, &walk.paths[i]);
		walk.max_segments = Max(walk.max_segments, walk.paths[i].n_segments);
	}
	walk.element = palloc0(sizeof(int) * (walk.max_segments + 1));

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &walk;
	sem.object_start = walk_container_start;
	sem.object_end = walk_container_end;
	sem.array_start = walk_container_start;
	sem.array_end = walk_container_end;
	sem.object_field_start = walk_field_start;
	sem.array_element_start = walk_element_start;
	sem.scalar = walk_scalar;
	walk.lex = makeJsonLexContextCstringLen(unconstify(char *, body), (int) len,
											encoding, true);
	if (pg_parse_json(walk.lex, &sem) != JSON_SUCCESS)
		return JSON_FIELDS_INVALID;
	return JSON_FIELDS_OK;
}

/* The usual message for what json_fields() found wrong with an answer. */
const char *
json_fields_problem(JsonFieldsResult result)
{
	switch (result)
	{
		case JSON_FIELDS_OK:
			break;
		case JSON_FIELDS_BAD_TEXT:
			return "the answer is not valid JSON text (bad bytes)";
		case JSON_FIELDS_NOT_OBJECT:
			return "the answer is not a JSON object";
		case JSON_FIELDS_TOO_DEEP:
			return "the answer nests deeper than " CppAsString2(JSON_FIELDS_MAX_DEPTH) " levels";
		case JSON_FIELDS_INVALID:
			return "the answer is not valid JSON";
	}
	return "";
}

/*
 * Finds the scalar at dot path in a JSON body.  On success sets *value
 * (strings unescaped, numbers and booleans as written); otherwise makes
 * *answer the error (not JSON, missing field) and returns false.
 */
bool
json_scalar_at_path(const char *body, size_t body_len, const char *path,
					char **value, CheckAnswer *answer)
{
	JsonField	field = {.path = path};
	JsonFieldsResult result = json_fields(body, body_len, 0, &field, 1);

	if (result != JSON_FIELDS_OK)
	{
		answer_error(answer, "%s", json_fields_problem(result));
		return false;
	}
	if (field.value == NULL)
	{
		answer_error(answer, "the answer has no status at \"%s\"", path);
		return false;
	}
	*value = field.value;
	return true;
}

/* TEMPORARY (replaced by channel.c at merge) */
ArrayType *
channel_schedule(Jsonb *options, const char *channel)
{
	JsonbValue *v = option_value(options, "schedule");
	StringInfoData text;

	option_schedule(options, channel);
	initStringInfo(&text);
	if (v == NULL)
		appendStringInfoString(&text, "{10s,30s,1min,2min,5min,10min,30min,1h}");
	else
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbValue	elem;
		JsonbIteratorToken tok;

		appendStringInfoChar(&text, '{');
		while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
			if (tok == WJB_ELEM)
				appendStringInfo(&text, "%s\"%.*s\"", text.len > 1 ? "," : "",
								 elem.val.string.len, elem.val.string.val);
		appendStringInfoChar(&text, '}');
	}
	return DatumGetArrayTypeP(OidInputFunctionCall(F_ARRAY_IN, text.data, INTERVALOID, -1));
}
