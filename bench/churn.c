/* One short-lived TCP client for bench/rss_bench.py: connect to 127.0.0.1:PORT, send a line,
 * read until the server closes, exit. Without a port it exits at once (a process, no connection). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char buf[256];
	int s;

	if (argc < 2)
		return 0;
	a.sin_port = htons(atoi(argv[1]));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		return 1;
	if (write(s, "hello from churn\n", 17) != 17)
		return 1;
	while (read(s, buf, sizeof(buf)) > 0)
		;
	close(s);
	return 0;
}
