package org.caremesh.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.HardcodedServerAddressStrategy;
import ca.uhn.fhir.rest.server.IResourceProvider;
import ca.uhn.fhir.rest.server.RestfulServer;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

/**
 * caremesh's local HAPI FHIR server for tests and the demo: HAPI's RestfulServer on embedded
 * Jetty at http://127.0.0.1:PORT/fhir, FHIR R4 (default) or R5, every resource type of the
 * release in memory, referential integrity and HAPI's validator on every request.
 *
 * <p>Usage: java -cp ... org.caremesh.hapi.Main --port 8090 [--release R4|R5]
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    int port = 8090;
    String release = "R4";
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--port" -> port = Integer.parseInt(args[i + 1]);
        case "--release" -> release = args[i + 1].toUpperCase(java.util.Locale.ROOT);
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    FhirContext ctx = switch (release) {
      case "R4" -> FhirContext.forR4Cached();
      case "R5" -> FhirContext.forR5Cached();
      default -> throw new IllegalArgumentException("release must be R4 or R5");
    };
    String base = "http://127.0.0.1:" + port + "/fhir";
    long started = System.nanoTime();

    MemoryStore store = new MemoryStore(ctx);
    Validation validation = new Validation(ctx);
    List<IResourceProvider> providers = new ArrayList<>();
    for (String type : new TreeSet<>(ctx.getResourceTypes())) {
      providers.add(new MemoryResourceProvider(type, store, validation));
    }
    RestfulServer fhir = new RestfulServer(ctx);
    fhir.setResourceProviders(providers);
    fhir.registerProvider(new TransactionProvider(store));
    fhir.registerInterceptor(validation);
    fhir.setDefaultResponseEncoding(EncodingEnum.JSON);
    fhir.setServerAddressStrategy(new HardcodedServerAddressStrategy(base));
    validation.warmUp("{\"resourceType\":\"Patient\",\"active\":true}");

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost("127.0.0.1");
    connector.setPort(port);
    server.addConnector(connector);
    ServletContextHandler context = new ServletContextHandler();
    context.setContextPath("/");
    ServletHolder holder = new ServletHolder(fhir);
    holder.setInitOrder(1); // initialise HAPI before the port answers
    context.addServlet(holder, "/fhir/*");
    server.setHandler(context);
    server.setStopAtShutdown(true);
    server.start();
    System.out.printf(
        "caremesh local HAPI FHIR %s server ready on %s in %.1f s%n",
        release, base, (System.nanoTime() - started) / 1e9);
    server.join();
  }
}
