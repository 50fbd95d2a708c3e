"""slap-bench driver: the real slapos.slap client library against one master URL.

Usage: python slap-bench.py URL COMPUTER PARTITIONS REQUESTS BIG GETS
Prints one JSON object: seconds per call for each phase.
"""
import json
import sys
import time

import slapos.slap
import slapos.util

url, cid = sys.argv[1], sys.argv[2]
partitions, requests, big, gets = (int(a) for a in sys.argv[3:7])
SR = '/srv/slap-bench/software.cfg'

slap = slapos.slap.slap()
slap.initializeConnection(url)
computer = slap.registerComputer(cid)
out = {}


def timed(key, fn):
    t = time.perf_counter()
    result = fn()
    out.setdefault(key, []).append(time.perf_counter() - t)
    return result


def payload(n):
    """What `slapos node format` sends: 2 addresses, a tap and a user per partition."""
    return slapos.util.dumps({
        'reference': cid, 'address': '10.0.0.1', 'netmask': '255.255.255.0',
        'instance_root': '/srv/slapgrid', 'software_root': '/opt/slapgrid',
        'partition_list': [{
            'reference': 'slappart%d' % i, 'path': '/srv/slapgrid/slappart%d' % i,
            'address_list': [
                {'addr': '10.%d.%d.%d' % (i // 65536, i // 256 % 256, i % 256),
                 'netmask': '255.255.255.255'},
                {'addr': 'fd00::%x' % (i + 1), 'netmask': 'ffff:ffff:ffff:ffff::'}],
            'tap': {'name': 'slaptap%d' % i}, 'user': {'name': 'slapuser%d' % i},
            'external_storage_list': [],
        } for i in range(n)]})


def request(i):
    return slap.registerOpenOrder().request(
        SR, 'inst%d' % i, partition_parameter_kw={'p': 'v%d' % i, 'n': str(i)},
        filter_kw={'computer_guid': cid})


def full_info():
    """Raw HTTP: the server's time plus transfer, no client-side unmarshalling."""
    return slap._connection_helper.GET(
        'getFullComputerInformation', params={'computer_id': cid})


def floor():
    """The client's own cost: a constant answer, no store access."""
    return slap._connection_helper.GET(
        'getComputerPartitionStatus',
        params={'computer_id': cid, 'computer_partition_id': 'slappart0'})


for _ in range(20):
    timed('floor', floor)
body = payload(partitions)
timed('register_cold', lambda: computer.updateConfiguration(body))
for _ in range(3):
    timed('register_warm', lambda: computer.updateConfiguration(body))
timed('supply', lambda: slap.registerSupply().supply(SR, computer_guid=cid))
for i in range(requests):
    timed('request_new', lambda: request(i))
for i in range(min(requests, 20)):
    timed('request_same', lambda: request(i))
size = 0
for _ in range(gets):
    size = len(timed('full_info_%d' % partitions, full_info))
out['full_info_%d_bytes' % partitions] = size
parts = timed('full_info_client', computer.getComputerPartitionList)
assert sum(p.getState() != 'destroyed' for p in parts) == requests, 'busy partitions'
if big > partitions:
    body = payload(big)
    timed('register_%d' % big, lambda: computer.updateConfiguration(body))
    for i in range(requests, big):
        timed('request_new_big', lambda: request(i))
    for _ in range(max(gets // 5, 3)):
        size = len(timed('full_info_%d' % big, full_info))
    out['full_info_%d_bytes' % big] = size
print(json.dumps(out))
