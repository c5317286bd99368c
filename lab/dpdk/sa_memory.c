/* SPDX-License-Identifier: MIT
 *
 * sa_memory: DPDK 22.11's memory per inbound IPsec SA, the baseline for xsec's SAD memory
 * (`xsec-lab vs-dpdk --what memory`). Written for xsec against the public DPDK API.
 *
 * For each algorithm it creates N inbound ESP tunnel-mode SAs (IPv4, replay window 64, no
 * ESN) the way an application on librte_ipsec must: one cryptodev symmetric session each
 * (from a session mempool of N elements: aesni_gcm for AES-128-GCM, aesni_mb for
 * AES-128-CBC + HMAC-SHA1-96, the PMDs ipsec-secgw uses in xsec's comparison) and one
 * rte_ipsec_sa each (rte_zmalloc of rte_ipsec_sa_size, initialised, its session prepared).
 * The memory is what DPDK's heap allocated for them (rte_malloc_get_socket_stats before the
 * pool is created and after the last SA), so allocator headers and the mempool's per-object
 * headers count, as resident memory counts them on xsec's side. An application's own
 * per-SA record (ipsec-secgw's `struct ipsec_sa`, its SPI table) is not included: DPDK's
 * figure is a lower bound.
 *
 * Output, one CSV line per algorithm after a header:
 *   alg,sas,heap_bytes,bytes_per_sa,session_private,ipsec_sa_size
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include <rte_eal.h>
#include <rte_malloc.h>
#include <rte_mempool.h>
#include <rte_cryptodev.h>
#include <rte_ip.h>
#include <rte_ipsec.h>
#include <rte_errno.h>

static uint8_t key[64];

static struct rte_ipv4_hdr outer_hdr = {
	.version_ihl = (4 << 4) | 5,
	.time_to_live = 64,
	.next_proto_id = IPPROTO_ESP,
	.src_addr = RTE_BE32(RTE_IPV4(192, 0, 2, 1)),
	.dst_addr = RTE_BE32(RTE_IPV4(192, 0, 2, 2)),
};

static size_t
heap_allocated(void)
{
	struct rte_malloc_socket_stats st;

	if (rte_malloc_get_socket_stats(rte_socket_id(), &st) != 0)
		rte_exit(EXIT_FAILURE, "rte_malloc_get_socket_stats failed\n");
	return st.heap_allocsz_bytes;
}

static int
find_dev(const char *driver_prefix)
{
	unsigned int d;

	for (d = 0; d < rte_cryptodev_count(); d++)
		if (strncmp(rte_cryptodev_name_get(d), driver_prefix, strlen(driver_prefix)) == 0)
			return (int)d;
	return -1;
}

/* The PMDs create sessions only on a configured, started device. */
static int
dev_setup(uint8_t dev_id, struct rte_mempool *pool)
{
	struct rte_cryptodev_config conf = {.socket_id = rte_socket_id(), .nb_queue_pairs = 1};
	struct rte_cryptodev_qp_conf qp = {.nb_descriptors = 128, .mp_session = pool};

	if (rte_cryptodev_configure(dev_id, &conf) < 0)
		return -1;
	if (rte_cryptodev_queue_pair_setup(dev_id, 0, &qp, rte_socket_id()) < 0)
		return -1;
	return rte_cryptodev_start(dev_id);
}

/* N inbound SAs of one algorithm; prints its CSV line. */
static int
measure(const char *name, int gcm, unsigned int n)
{
	struct rte_crypto_sym_xform ci, au;
	struct rte_crypto_sym_xform *first;
	struct rte_ipsec_session *ss;
	struct rte_mempool *pool;
	int dev = find_dev(gcm ? "crypto_aesni_gcm" : "crypto_aesni_mb");
	uint32_t priv;
	size_t before, after;
	char pool_name[32];
	int sz = 0;
	unsigned int i;

	if (dev < 0) {
		fprintf(stderr, "%s: no crypto device\n", name);
		return -1;
	}
	memset(&ci, 0, sizeof(ci));
	memset(&au, 0, sizeof(au));
	if (gcm) {
		ci.type = RTE_CRYPTO_SYM_XFORM_AEAD;
		ci.aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
		ci.aead.op = RTE_CRYPTO_AEAD_OP_DECRYPT;
		ci.aead.key.data = key;
		ci.aead.key.length = 16;
		ci.aead.iv.offset = sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op);
		ci.aead.iv.length = 12;
		ci.aead.digest_length = 16;
		ci.aead.aad_length = 8;
		first = &ci;
	} else {
		ci.type = RTE_CRYPTO_SYM_XFORM_CIPHER;
		ci.cipher.algo = RTE_CRYPTO_CIPHER_AES_CBC;
		ci.cipher.op = RTE_CRYPTO_CIPHER_OP_DECRYPT;
		ci.cipher.key.data = key;
		ci.cipher.key.length = 16;
		ci.cipher.iv.offset = sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op);
		ci.cipher.iv.length = 16;
		au.type = RTE_CRYPTO_SYM_XFORM_AUTH;
		au.auth.op = RTE_CRYPTO_AUTH_OP_VERIFY;
		au.auth.algo = RTE_CRYPTO_AUTH_SHA1_HMAC;
		au.auth.key.data = key + 32;
		au.auth.key.length = 20;
		au.auth.digest_length = 12;
		au.next = &ci; /* verify, then decrypt */
		first = &au;
	}
	ss = calloc(n, sizeof(*ss));
	if (ss == NULL)
		return -1;
	priv = rte_cryptodev_sym_get_private_session_size(dev);
	before = heap_allocated();
	snprintf(pool_name, sizeof(pool_name), "sa_mem_%s", name);
	pool = rte_cryptodev_sym_session_pool_create(pool_name, n, priv, 0, 0, rte_socket_id());
	if (pool == NULL) {
		fprintf(stderr, "%s: session pool of %u: %s\n", name, n, rte_strerror(rte_errno));
		return -1;
	}
	if (dev_setup(dev, pool) != 0) {
		fprintf(stderr, "%s: cannot set up the crypto device\n", name);
		return -1;
	}
	for (i = 0; i < n; i++) {
		struct rte_ipsec_sa_prm prm;
		int rc;

		memset(&prm, 0, sizeof(prm));
		prm.ipsec_xform.spi = 0x1000 + i;
		prm.ipsec_xform.salt = i;
		prm.ipsec_xform.direction = RTE_SECURITY_IPSEC_SA_DIR_INGRESS;
		prm.ipsec_xform.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
		prm.ipsec_xform.mode = RTE_SECURITY_IPSEC_SA_MODE_TUNNEL;
		prm.ipsec_xform.tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV4;
		prm.ipsec_xform.replay_win_sz = 64;
		prm.crypto_xform = first;
		prm.tun.hdr_len = sizeof(outer_hdr);
		prm.tun.next_proto = IPPROTO_IPIP;
		prm.tun.hdr = &outer_hdr;
		key[0] = (uint8_t)i;
		key[1] = (uint8_t)(i >> 8);
		sz = rte_ipsec_sa_size(&prm);
		if (sz <= 0)
			return -1;
		ss[i].sa = rte_zmalloc(NULL, sz, RTE_CACHE_LINE_SIZE);
		if (ss[i].sa == NULL) {
			fprintf(stderr, "%s: rte_zmalloc failed at SA %u\n", name, i);
			return -1;
		}
		rc = rte_ipsec_sa_init(ss[i].sa, &prm, sz);
		if (rc <= 0 || rc > sz) {
			fprintf(stderr, "%s: rte_ipsec_sa_init: %d\n", name, rc);
			return -1;
		}
		ss[i].crypto.ses = rte_cryptodev_sym_session_create(dev, first, pool);
		if (ss[i].crypto.ses == NULL) {
			fprintf(stderr, "%s: session %u: %s\n", name, i, rte_strerror(rte_errno));
			return -1;
		}
		ss[i].type = RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO;
		ss[i].crypto.dev_id = dev;
		if (rte_ipsec_session_prepare(&ss[i]) != 0) {
			fprintf(stderr, "%s: rte_ipsec_session_prepare failed\n", name);
			return -1;
		}
	}
	after = heap_allocated();
	printf("%s,%u,%zu,%.0f,%u,%d\n", name, n, after - before, (double)(after - before) / n,
	       priv, sz);
	fflush(stdout);
	for (i = 0; i < n; i++) {
		rte_cryptodev_sym_session_free(dev, ss[i].crypto.ses);
		rte_free(ss[i].sa);
	}
	rte_cryptodev_stop(dev);
	rte_mempool_free(pool);
	free(ss);
	return 0;
}

int
main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv);
	unsigned int n = 100000, d;
	int failed = 0;

	if (ret < 0)
		rte_exit(EXIT_FAILURE, "EAL init failed\n");
	argc -= ret;
	argv += ret;
	if (argc > 1)
		n = (unsigned int)strtoul(argv[1], NULL, 0);
	if (n == 0)
		rte_exit(EXIT_FAILURE, "usage: sa_memory [EAL args] -- [N]\n");
	for (d = 0; d < sizeof(key); d++)
		key[d] = (uint8_t)(d * 13 + 1);
	printf("alg,sas,heap_bytes,bytes_per_sa,session_private,ipsec_sa_size\n");
	failed |= measure("aes128gcm16", 1, n) != 0;
	failed |= measure("aes128-sha1", 0, n) != 0;
	rte_eal_cleanup();
	return failed;
}
