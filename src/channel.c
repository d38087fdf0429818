/*
 * channel.c
 *		Channel definitions: channel_compile() checks a channel row (driver,
 *		base_url, options) and compiles it for the checker.  The options
 *		every channel takes whatever its driver are read here (timeout_ms,
 *		max_inflight, schedule, close_on_expiry, proxy, the politeness
 *		options max_rps and pause_after_errors, and the TLS options ca_cert,
 *		client_cert and client_key, parsed here once for all the channel's
 *		connections); the driver's own options by its compile callback.
 *
 *		This file also owns schedules: the checks of a schedule (channel
 *		option or track()'s argument), a channel's schedule as an interval[]
 *		and the built-in default schedule.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/resowner.h"

#include "channel.h"

/* Options any channel takes, handled here rather than by its driver. */
static const char *const common_option_names[] = {
	"timeout_ms", "max_inflight", "schedule", "close_on_expiry", "proxy",
	"max_rps", "pause_after_errors", "ca_cert", "client_cert", "client_key", NULL
};

/* Error answers in a row that pause a channel, without the option. */
#define DEFAULT_PAUSE_AFTER_ERRORS 20

/* The highest max_rps: beyond it, a channel is better left without one. */
#define MAX_RPS_LIMIT 100000

/* The schedule of a channel without a "schedule" option. */
static const char *const default_schedule[] = {
	"10s", "30s", "1min", "2min", "5min", "10min", "30min", "1h"
};

/*
 * Reads integer option key into *value if present, checking that it is a
 * whole number from min to max.
 */
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
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value must be a whole number.")));
	if (n < min || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("%lld is outside the range %d to %d.", n, min, max)));
	*value = (int) n;
}

/*
 * Reads number option key into *value if present, checking that it is a
 * number above 0 and at most max.
 */
static void
option_positive_number(Jsonb *options, const char *key, double max, double *value,
					   const char *channel)
{
	JsonbValue *v = option_value(options, key);
	double		n;

	if (v == NULL)
		return;
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value must be a number.")));
	n = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
										   NumericGetDatum(v->val.numeric)));
	if (!(n > 0 && n <= max))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("%g is not above 0 and at most %g.", n, max)));
	*value = n;
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

/*
 * Reads and checks the "schedule" option of a channel: an array of
 * interval strings that schedule_check() accepts.  Returns the delays and
 * sets *n, or returns NULL if the option is absent.
 */
static Interval **
option_schedule(Jsonb *options, const char *channel, int *n)
{
	JsonbValue *v = option_value(options, "schedule");
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	Interval  **items;

	*n = 0;
	if (v == NULL)
		return NULL;
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"schedule\" of channel \"%s\"", channel),
				 errdetail("The value must be a JSON array of interval strings."),
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
					 errmsg("invalid value for option \"schedule\" of channel \"%s\"", channel),
					 errdetail("Element %d is not an interval string.", *n + 1)));
		text = pnstrdup(elem.val.string.val, elem.val.string.len);
		items[*n] = parse_interval(text);
		if (items[*n] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"schedule\" of channel \"%s\"", channel),
					 errdetail("Element %d (\"%s\") is not an interval.", *n + 1, text)));
		(*n)++;
	}
	schedule_check(items, *n, channel);
	return items;
}

/*
 * Checks a schedule: 1 to SCHEDULE_MAX_DELAYS delays, each above zero and
 * at most SCHEDULE_MAX_DELAY_DAYS days.  channel names the channel whose
 * "schedule" option it is, or is NULL for the schedule argument of track().
 */
void
schedule_check(Interval **items, int n, const char *channel)
{
	Interval	zero = {0};
	Interval	longest = {0};

	longest.day = SCHEDULE_MAX_DELAY_DAYS;
	if (n < 1 || n > SCHEDULE_MAX_DELAYS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 channel ?
				 errmsg("invalid value for option \"schedule\" of channel \"%s\"", channel) :
				 errmsg("invalid schedule"),
				 errdetail("The schedule has %d delays.", n),
				 errhint("A schedule has 1 to %d delays.", SCHEDULE_MAX_DELAYS)));
	for (int i = 0; i < n; i++)
	{
		if (items[i] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 channel ?
					 errmsg("invalid value for option \"schedule\" of channel \"%s\"", channel) :
					 errmsg("invalid schedule"),
					 errdetail("Delay %d is null.", i + 1)));
		if (!DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(items[i]),
											  IntervalPGetDatum(&zero))) ||
			DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(items[i]),
											 IntervalPGetDatum(&longest))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 channel ?
					 errmsg("invalid value for option \"schedule\" of channel \"%s\"", channel) :
					 errmsg("invalid schedule"),
					 errdetail("Delay %d (%s) is not above zero and at most %d days.",
							   i + 1,
							   DatumGetCString(DirectFunctionCall1(interval_out,
																   IntervalPGetDatum(items[i]))),
							   SCHEDULE_MAX_DELAY_DAYS),
					 errhint("Each delay must be greater than 0 and at most %d days.",
							 SCHEDULE_MAX_DELAY_DAYS)));
	}
}

/*
 * The schedule of a channel as a one-dimensional interval[] starting at
 * index 1: its "schedule" option, checked, or the built-in default when it
 * has none (options NULL: none).  This is the one place the default lives.
 */
ArrayType *
channel_schedule(Jsonb *options, const char *channel)
{
	Interval  **items = NULL;
	Datum	   *elems;
	int			n = 0;

	if (options != NULL && JB_ROOT_IS_OBJECT(options) && !JB_ROOT_IS_SCALAR(options))
		items = option_schedule(options, channel, &n);
	if (items == NULL)
	{
		n = lengthof(default_schedule);
		items = palloc(sizeof(Interval *) * n);
		for (int i = 0; i < n; i++)
			items[i] = DatumGetIntervalP(DirectFunctionCall3(interval_in,
															 CStringGetDatum(default_schedule[i]),
															 ObjectIdGetDatum(InvalidOid),
															 Int32GetDatum(-1)));
	}
	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = IntervalPGetDatum(items[i]);
	return construct_array(elems, n, INTERVALOID, sizeof(Interval), false,
						   TYPALIGN_DOUBLE);
}

/* Frees a channel's TLS material with the memory context it was made in. */
static void
tls_release_callback(void *arg)
{
	http_tls_free((HttpTls *) arg);
}

/*
 * Reads the TLS options: ca_cert (PEM CA certificates trusted instead of
 * the system store) and client_cert with client_key (mutual TLS; both or
 * neither), each parsed once here.  Returns the material for the HTTP
 * engine, freed when the current memory context goes, or NULL if the
 * channel has none of them.  Errors name the option, never show
 * client_key.
 */
static HttpTls *
option_tls(Jsonb *options, const char *channel)
{
	char	   *ca_cert = NULL;
	char	   *client_cert = NULL;
	char	   *client_key = NULL;
	bool		has_cert;
	bool		has_key;
	TlsMaterial *material;
	HttpTls    *tls;
	MemoryContextCallback *callback;
	char		error[256];

	(void) option_string(options, "ca_cert", &ca_cert, channel);
	has_cert = option_string(options, "client_cert", &client_cert, channel);
	has_key = option_string(options, "client_key", &client_key, channel);
	if (has_cert != has_key)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" of channel \"%s\" needs option \"%s\"",
						has_cert ? "client_cert" : "client_key", channel,
						has_cert ? "client_key" : "client_cert"),
				 errhint("Mutual TLS takes both: client_cert, the PEM certificate, and client_key, its PEM private key.")));
	if (ca_cert == NULL && !has_cert)
		return NULL;

	material = tls_material_new();
	if (material == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (ca_cert != NULL)
	{
		int			n = tls_trust_from_pem(material, ca_cert, error, sizeof(error));

		if (n < 0)
		{
			tls_material_free(material);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"ca_cert\" of channel \"%s\"", channel),
					 errdetail("The value is not PEM CA certificates: %s.", error),
					 errhint("Give the PEM text of the certificate(s) of the CA that issued the channel's certificate.")));
		}
		elog(DEBUG1, "paysync: channel \"%s\": ca_cert loaded, %d certificate%s",
			 channel, n, n == 1 ? "" : "s");
	}
	if (has_cert)
	{
		TlsIdentityProblem problem = tls_identity_from_pem(material, client_cert, client_key,
														   error, sizeof(error));

		/* the key's text is needed no more */
		explicit_bzero(client_key, strlen(client_key));
		if (problem != TLS_IDENTITY_OK)
		{
			tls_material_free(material);
			if (problem == TLS_IDENTITY_MISMATCH)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"client_key\" of channel \"%s\" is not the key of its client_cert", channel),
						 errhint("Give the private key the client certificate was issued for.")));
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"%s\" of channel \"%s\"",
							problem == TLS_IDENTITY_BAD_CERT ? "client_cert" : "client_key",
							channel),
					 errdetail("The value is %s.", error)));
		}
	}

	tls = http_tls_new(material);
	if (tls == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	callback = palloc(sizeof(MemoryContextCallback));
	callback->func = tls_release_callback;
	callback->arg = tls;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, callback);
	return tls;
}

/* The option names a channel of driver may have, for a hint: "a, b, c". */
static char *
option_names_text(const PaysyncDriver *driver)
{
	StringInfoData out;

	initStringInfo(&out);
	for (int i = 0; common_option_names[i]; i++)
		appendStringInfo(&out, "%s%s", i > 0 ? ", " : "", common_option_names[i]);
	for (int i = 0; driver->option_names && driver->option_names[i]; i++)
		appendStringInfo(&out, ", %s", driver->option_names[i]);
	return out.data;
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
	int			n_delays;

	if (driver == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown driver \"%s\" for channel \"%s\"", driver_name, name),
				 errhint("The available drivers are %s.", driver_names())));

	if (!http_url_valid(base_url, urlerr, sizeof(urlerr)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base_url \"%s\" for channel \"%s\"", base_url, name),
				 errdetail("%s", urlerr),
				 errhint("Give an absolute http:// or https:// URL, such as https://api.example.com.")));

	if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid options for channel \"%s\"", name),
				 errdetail("The options must be a JSON object.")));

	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (!word_in_list(key, common_option_names) &&
			!word_in_list(key, driver->option_names))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%s\" for channel \"%s\"", key, name),
					 errdetail("Driver %s takes no option \"%s\".", driver->name, key),
					 errhint("The options of driver %s are %s.", driver->name,
							 option_names_text(driver))));
	}

	option_int(options, "timeout_ms", 100, 600000, &config->timeout_ms, name);
	option_int(options, "max_inflight", 1, 10000, &config->max_inflight, name);
	option_positive_number(options, "max_rps", MAX_RPS_LIMIT, &config->max_rps, name);
	config->pause_after_errors = DEFAULT_PAUSE_AFTER_ERRORS;
	option_int(options, "pause_after_errors", 0, 1000000, &config->pause_after_errors, name);
	(void) option_schedule(options, name, &n_delays);

	config->close_on_expiry = driver->close_on_expiry_default;
	if (option_bool(options, "close_on_expiry", &config->close_on_expiry, name) &&
		config->close_on_expiry && !driver->can_close)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"close_on_expiry\" of channel \"%s\"", name),
				 errdetail("Driver %s cannot close a trade.", driver->name)));

	if (option_string(options, "proxy", &config->proxy, name) &&
		!http_proxy_url_valid(config->proxy, urlerr, sizeof(urlerr)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"proxy\" of channel \"%s\"", name),
				 errdetail("%s", urlerr),
				 errhint("Give a proxy URL such as http://proxy.internal:3128 or socks5h://127.0.0.1:1080.")));

	config->tls = option_tls(options, name);

	config->name = pstrdup(name);
	config->base_url = pstrdup(base_url);
	config->driver = driver;
	config->driver_config = driver->compile(name, base_url, options);
	return config;
}
