# bench/receive_phase.sh: phase 6 of bench/run, sourced by it: receive()
# calls per second on one core (one backend, pgbench -c 1) for a wechatpay
# notification (RSA-2048 verify + AES-256-GCM decrypt) and a stripe one
# (HMAC-SHA256). The first call applies the notification; the measured ones
# verify it in full again and find the payment final (outcome unchanged).
# Needs from bench/run: TOP, TMP, BINDIR, PSQL (array), say, fail.

receive_phase() {
	local seconds=${RX_SECONDS:-10}
	local api_v3_key secret now nonce transaction ciphertext body signature t v1
	say "phase 6, receive(): ${seconds} s each of wechatpay and stripe notifications, one backend..."
	[ -x "$TOP/t/mock/mock_seal" ] || fail "t/mock/mock_seal is not built (make -C t/mock)"
	[ -f "$TMP/platform.key" ] || {
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/platform.key" 2>/dev/null
		openssl pkey -in "$TMP/platform.key" -pubout -out "$TMP/platform.pub"
	}
	[ -f "$TMP/merchant.key" ] ||
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/merchant.key" 2>/dev/null
	api_v3_key=$(openssl rand -hex 16)
	secret=whsec_$(openssl rand -hex 16)
	"${PSQL[@]}" -v mkey="$(cat "$TMP/merchant.key")" -v pkey="$(cat "$TMP/platform.pub")" \
		-v v3="$api_v3_key" -v wh="$secret" >/dev/null <<'SQL' || fail "cannot create the receive() channels"
SELECT paysync.create_channel('wx_rx', 'wechatpay', 'http://127.0.0.1:9',
  jsonb_build_object('mchid', '1900000001', 'merchant_serial_no', 'BENCHMERCHANTSERIAL',
    'merchant_private_key', :'mkey', 'platform_public_key', :'pkey',
    'platform_serial', 'BENCHPLATFORMSERIAL', 'api_v3_key', :'v3'));
SELECT paysync.create_channel('st_rx', 'stripe', 'http://127.0.0.1:9',
  jsonb_build_object('secret_key', 'sk_test_bench', 'webhook_secret', :'wh'));
SELECT paysync.track('rx_wx', 'wx_rx', 100, 'CNY', schedule => '{1h}');
SELECT paysync.track('pi_rx', 'st_rx', 100, 'USD', schedule => '{1h}');
SQL

	# WeChat Pay: the transaction sealed with the APIv3 key, the body signed
	# by the platform key over "timestamp\nnonce\nbody\n"
	now=$(date +%s)
	nonce=benchnonce01
	transaction='{"mchid":"1900000001","appid":"wxbench","out_trade_no":"rx_wx","transaction_id":"4200000000","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"ok","amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}'
	ciphertext=$(printf '%s' "$transaction" | "$TOP/t/mock/mock_seal" "$api_v3_key" "$nonce" transaction)
	body='{"id":"EV-bench","create_time":"2026-01-01T00:00:00+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"ok","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"'"$ciphertext"'","associated_data":"transaction","nonce":"'"$nonce"'"}}'
	signature=$(printf '%s\n%s\n%s\n' "$now" HN1 "$body" | openssl dgst -sha256 -sign "$TMP/platform.key" | base64 -w0)
	cat >"$TMP/rx_wx.sql" <<SQL
SELECT outcome FROM paysync.receive('wx_rx', \$h\${"Wechatpay-Timestamp": "$now", "Wechatpay-Nonce": "HN1", "Wechatpay-Signature": "$signature", "Wechatpay-Serial": "BENCHPLATFORMSERIAL"}\$h\$::jsonb, \$b\$$body\$b\$);
SQL

	# Stripe: v1 = hex HMAC-SHA256 of "t.body" under the webhook secret
	t=$now
	body='{"id":"evt_bench","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_rx","object":"payment_intent","status":"succeeded","amount":100,"amount_received":100,"currency":"usd"}}}'
	v1=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
	cat >"$TMP/rx_st.sql" <<SQL
SELECT outcome FROM paysync.receive('st_rx', \$h\${"Stripe-Signature": "t=$t,v1=$v1"}\$h\$::jsonb, \$b\$$body\$b\$);
SQL

	local outcome_wx outcome_st tps_wx tps_st
	outcome_wx=$("${PSQL[@]}" -At -f "$TMP/rx_wx.sql") || fail "the wechatpay notification is refused"
	outcome_st=$("${PSQL[@]}" -At -f "$TMP/rx_st.sql") || fail "the stripe notification is refused"
	[ "$outcome_wx" = applied ] && [ "$outcome_st" = applied ] ||
		fail "the first notifications were not applied ($outcome_wx, $outcome_st)"
	tps_wx=$("$BINDIR/pgbench" -n -c 1 -j 1 -T "$seconds" -f "$TMP/rx_wx.sql" "${PGBENCH_CONN[@]}" 2>/dev/null |
		sed -n 's/^tps = \([0-9]*\).*without initial connection time.*/\1/p')
	tps_st=$("$BINDIR/pgbench" -n -c 1 -j 1 -T "$seconds" -f "$TMP/rx_st.sql" "${PGBENCH_CONN[@]}" 2>/dev/null |
		sed -n 's/^tps = \([0-9]*\).*without initial connection time.*/\1/p')
	[ -n "$tps_wx" ] && [ -n "$tps_st" ] || fail "pgbench did not run the receive() scripts"
	say ""
	printf '%-34s%-22s%s\n' "receive(), one backend" "wechatpay" "stripe"
	printf '%-34s%-22s%s\n' "calls/s (verify, then unchanged)" "$tps_wx" "$tps_st"
}
